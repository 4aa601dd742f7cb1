"""The CI performance gate: stored points as a dataset (`dataset`), the bootstrap comparison
(`compare`), its reports (`render`), baselines (`baseline`) and `tuner check` (`check`)."""
