"""The models a sweep tunes together behind the one its load is sent to, or beside it.

Models sharing one server (`[[model]]`, kind "multi") are tuned together the same way: the
load goes to each of them at its share (`load/multi.py`), each within its own budget.

An ensemble's steps (read from its `ensemble_scheduling`; only the steps that can batch are
tuned) or the models a BLS model calls (`[model] composing_models`). The load goes through
the ensemble or BLS model, so the latency budget is end to end; the candidates are joint
settings of these models (`config.JointSpec`, searched by `search/joint.py`).

`StepModels` opens each model in the run session (so every one is restored at the end,
after an error and Ctrl-C too), keeps each model's original config in
`RUN/original/<model>/config.pbtxt` (and what the server served, for a resumed run), and
applies a joint candidate: every model gets the candidate's setting or its original config,
checked before anything is sent. After a change, the model the load is sent to must still
be loaded: Triton silently unloads an ensemble whose step no longer fits it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuner import config as cfgmod
from tuner.errors import ConfigError, ModelLoadError, ProfileError
from tuner.report.steps import STEPS_FILE

READBACK_FILE = "readback.json"


@dataclass(frozen=True)
class StepModel:
    name: str
    original: cfgmod.ModelConfig  # what candidates are made from
    readback: cfgmod.ModelConfig  # what the server served when the run began (the baseline)


class StepModels:
    """The tuned models of a joint sweep; see the module docstring."""

    def __init__(self, session, profile, run_dir: Path, entry: cfgmod.ModelConfig, names: list[str]):
        self.s, self.p, self.run_dir = session, profile, Path(run_dir)
        self.entry = entry  # the ensemble or BLS model the load is sent to, as served
        self.kind = ("ensemble" if entry.platform == "ensemble" else "multi" if profile.constraints.models
                     else "bls")
        self.models: dict[str, StepModel] = {}
        self.names = list(names)

    @staticmethod
    def wanted(profile, entry: cfgmod.ModelConfig) -> list[str]:
        """The models to tune with `entry`: the models sharing the server ([[model]], the entry first),
        else its ensemble steps, else the profile's composing models."""
        if profile.constraints.models:
            return [sm.name for sm in profile.constraints.models]
        return cfgmod.ensemble_steps(entry) or list(profile.composing_models)

    def open(self) -> "StepModels":
        if self.p.goal == "max_throughput_per_instance":
            raise ProfileError(f"{self.p.name}: goal max_throughput_per_instance is not defined for several "
                               "models tuned together; use max_throughput or min_latency")
        tunable = []
        for name in self.names:
            readback = self._stored_readback(name) or self.s.open_model(name)
            original = self.s.original_config(readback=readback, model=name)
            if self.kind == "ensemble" and original.max_batch_size == 0:
                continue  # a step that cannot batch: nothing of it to tune
            cfgmod.check_tunable(original, where=name)
            self._keep(name, original, readback)
            self.models[name] = StepModel(name, original, readback)
            tunable.append(name)
        if not tunable:
            raise ConfigError(f"'{self.p.model}': none of its models {', '.join(self.names)} can batch "
                              "(max_batch_size 0 everywhere); there is nothing to tune")
        self.names = tunable
        # the tuned models in their order, for the outputs (`report/steps.py`)
        (self.run_dir / "original" / STEPS_FILE).write_text(json.dumps({"kind": self.kind, "models": tunable}),
                                                            encoding="utf-8")
        return self

    def _stored_readback(self, name: str) -> cfgmod.ModelConfig | None:
        # A resumed run: the server may still hold a candidate left by a killed run.
        f = self.run_dir / "original" / name / READBACK_FILE
        if not f.exists():
            return None
        readback = cfgmod.config_from_json(f.read_text(encoding="utf-8"))
        self.s.open_model(name)
        self.s.models[name].original = readback  # restore to what the first session found
        return readback

    def _keep(self, name: str, original: cfgmod.ModelConfig, readback: cfgmod.ModelConfig) -> None:
        d = self.run_dir / "original" / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.pbtxt").write_text(cfgmod.format_config(original), encoding="utf-8")
        (d / READBACK_FILE).write_text(cfgmod.config_to_json(readback), encoding="utf-8")

    # -- the search space
    def originals(self) -> dict[str, cfgmod.CandidateSpec]:
        return {n: cfgmod.current_spec(m.readback) for n, m in self.models.items()}

    def options(self) -> dict[str, list[cfgmod.CandidateSpec]]:
        specs = self.p.search.specs()
        return {n: list(specs) for n in self.names}

    def config_of(self, name: str, spec: cfgmod.CandidateSpec | None) -> cfgmod.ModelConfig:
        """The model's config in a candidate: the original's tuned fields set to `spec` (None: as served)."""
        m = self.models[name]
        if spec is None:
            return m.readback
        cfgmod.check_step_batch(self.entry, name, spec)
        return cfgmod.make_candidate(m.original, spec)

    # -- applying
    def apply(self, joint: cfgmod.JointSpec) -> dict[str, cfgmod.ModelConfig]:
        """Every tuned model at its setting in `joint` (checked first, all of them, before anything is
        sent); the configs read back. ConfigError: refused before sending; ModelLoadError: the server
        refused one (named), or the model the load goes to did not come back."""
        wanted = {}
        for name in self.names:
            try:
                wanted[name] = self.config_of(name, joint.spec_of(name))
            except ConfigError as err:
                raise ConfigError(f"step {name}: {err}") from None
        out = {}
        for name, cfg in wanted.items():  # the same config again is a no-op for Triton (~1 ms)
            try:
                out[name] = self.s.models[name].apply(cfg)
            except ModelLoadError as err:
                raise ModelLoadError(f"step {name}: {err}") from None
        self._entry_ready()
        return out

    def _entry_ready(self) -> None:
        control, entry = self.s.server.control, self.p.model
        if control.is_loaded(entry):
            return
        try:
            control.load(entry)
        except ModelLoadError as err:
            raise ModelLoadError(f"'{entry}' did not come back with these steps: {err}") from None
