"""`tuner check PROFILE --baseline FILE`: the CI gate.

Measures one config of the profile's model (the model as loaded, or with
`config="recommended"` the baseline's recommended candidate applied through
the load API and put back afterwards) at the baseline's load levels only,
with the profile's measurement settings, no search; then compares the new
run with the baseline (`tuner/gate/compare.py`). The run folder keeps results.jsonl
(with the environment), and comparison.json / comparison.md.

The environment is checked before anything is measured, so a mismatch costs
no measurement time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tuner import config as cfgmod
from tuner.errors import LoadError
from tuner.gate.compare import CompareOptions, Comparison, compare
from tuner.gate.dataset import Dataset, dataset_from_results, load_dataset
from tuner.gate.errors import CompareError, EnvironmentMismatch
from tuner.gate.render import to_json, to_markdown
from tuner.load import eventloop
from tuner.load.request import build_request
from tuner.measure import LoadPlan, measure_points
from tuner.profile import Profile
from tuner.results.environment import differences
from tuner.results.records import CandidateRecord, Measurement
from tuner.results.store import write_atomic
from tuner.session import RunSession, SessionSpec


@dataclass(frozen=True)
class CheckOutcome:
    run_dir: Path
    config_key: str  # the baseline config that was measured
    comparison: Comparison
    duration_s: float


@dataclass(frozen=True)
class _Target:
    """Which of the baseline's configs to measure, and how to get it onto the server."""

    key: str  # the baseline's key for it
    spec: cfgmod.CandidateSpec
    applied: cfgmod.ModelConfig | None  # None: the model as loaded


def run_check(profile: Profile, baseline: Path | str, run_dir: Path, *, config: str = "current",
              options: CompareOptions | None = None, metrics_url: str | None = None,
              on_point: Callable[[Measurement], None] | None = None) -> CheckOutcome:
    options = options or CompareOptions()
    started = time.monotonic()
    base = load_dataset(baseline)  # a bad baseline fails before a server starts
    if base.model and base.model != profile.model:
        raise CompareError(f"{baseline} is a baseline of model '{base.model}', but profile {profile.name} "
                           f"measures '{profile.model}'")
    spec = SessionSpec("check", profile.model, profile.version, profile.connection(), profile=profile.name,
                       profile_sha256=profile.sha256, metrics_url=metrics_url)
    with RunSession(Path(run_dir), spec) as s:
        env = s.environment()
        # what the requests carry is part of the environment: a baseline of another mix is another workload
        env["input_mix"] = build_request(s.readback, profile.model, profile.version, inputs=profile.inputs).mix
        mismatches, _, _ = differences(base.environment, env)
        if mismatches and not options.allow_env_mismatch:
            raise EnvironmentMismatch(
                f"baseline {baseline} was measured in a different environment (" + "; ".join(mismatches)
                + "); re-save the baseline in this environment, or pass --allow-env-mismatch")
        target = _target(s, profile, base, baseline, config)
        levels = sorted(lvl for lvl, d in base.configs[target.key].points.items() if d.ok)
        if not levels:
            raise CompareError(f"{baseline}: config {target.key} has no successful load point to compare with")
        points = _measure(s, profile, target, levels, env, str(baseline), config, on_point)
    if points and all(m.status == "failed" for m in points):
        raise LoadError(f"every request failed: {points[0].first_error}")
    comparison = compare(base, dataset_from_results(s.results.path), options)
    write_atomic(s.run_dir / "comparison.json", json.dumps(to_json(comparison), indent=2) + "\n")
    write_atomic(s.run_dir / "comparison.md", to_markdown(comparison))
    return CheckOutcome(s.run_dir, target.key, comparison, time.monotonic() - started)


def _target(s: RunSession, profile: Profile, base: Dataset, baseline: Path | str, config: str) -> _Target:
    loaded_spec = cfgmod.current_spec(s.readback)
    if config == "current":
        target = _Target(loaded_spec.candidate_id, loaded_spec, None)
    else:
        key = base.recommended if config == "recommended" else config
        if key is None:
            raise CompareError(f"{baseline} names no recommended config (it was not saved from a "
                               "sweep); use --config current")
        if key not in base.configs:
            raise CompareError(f"{baseline} has no config '{key}' (it has: {', '.join(base.configs)})")
        if cfgmod.is_joint_dict(base.configs[key].spec):
            raise CompareError(f"{baseline}: config '{key}' sets several models (an ensemble's or BLS model's "
                               "steps); `tuner check` applies one model's config: deploy the recommended configs "
                               "and use --config current")
        spec = cfgmod.CandidateSpec.from_dict(base.configs[key].spec)
        applied = cfgmod.make_candidate(s.original_config(profile.config_path), spec,
                                        first_dim_is_batch=profile.first_dim_is_batch)
        target = _Target(key, spec, applied)
    if target.key not in base.configs:
        have = ", ".join(c.label for c in base.configs.values())
        raise CompareError(
            f"the model as loaded has config {target.key}, which {baseline} has no measurements of "
            f"(it has: {have}); pass --config recommended to measure the baseline's recommended "
            "config, or save a baseline of this config")
    return target


def _measure(s: RunSession, profile: Profile, target: _Target, levels: list[int], env: dict, baseline: str,
             config: str, on_point) -> list[Measurement]:
    is_original = target.applied is None
    s.record_run(env, settings=dict(profile.measurement.__dict__), baseline=baseline, config=config)
    measured_cfg = s.readback if is_original else s.model.apply(target.applied)
    s.record(CandidateRecord(spec=target.spec, status="loaded", config_json=cfgmod.config_to_json(measured_cfg),
                             is_baseline=is_original))
    plan = build_request(measured_cfg, profile.model, profile.version, inputs=profile.inputs)
    cid = "baseline" if is_original else target.spec.candidate_id
    return eventloop.run(measure_points(
        s, plan, LoadPlan(tuple(levels)), profile.measurement, cid, on_point,
        metrics_url=env.get("metrics_url") if env.get("gpus_known") else None))
