"""`tuner check PROFILE --baseline FILE`: the CI gate.

Measures one config of the profile's model (the model as loaded, or with
`config="recommended"` the baseline's recommended candidate applied through
the load API and put back afterwards) at the baseline's load levels only,
with the profile's measurement settings, no search; then compares the new
run with the baseline (`tuner.compare`). The run folder keeps results.jsonl
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

from tuner import __version__
from tuner.load import eventloop
from tuner import config as cfgmod
from tuner.gate.compare import (CompareError, CompareOptions, Comparison, EnvironmentMismatch, compare,
                                dataset_from_results, load_dataset, to_json, to_markdown)
from tuner.results.environment import collect, differences
from tuner.errors import LoadError, ServerError
from tuner.measure import measure_points
from tuner.load.request import build_request
from tuner.profile import Profile
from tuner.results.store import (CandidateRecord, Measurement, RESULTS_FILE, SCHEMA, append_record,
                                 write_atomic)
from tuner.server.context import open_server
from tuner.server.install import bundled_models
from tuner.server.model_session import ModelSession
from tuner.sweep import original_config


@dataclass
class CheckOutcome:
    run_dir: Path
    config_key: str
    comparison: Comparison
    duration_s: float


def run_check(profile: Profile, baseline: Path | str, run_dir: Path, *, config: str = "current",
              options: CompareOptions | None = None, metrics_url: str | None = None,
              on_point: Callable[[Measurement], None] | None = None) -> CheckOutcome:
    options = options or CompareOptions()
    started = time.monotonic()
    base = load_dataset(baseline)  # a bad baseline fails before a server starts
    if base.model and base.model != profile.model:
        raise CompareError(f"{baseline} is a baseline of model '{base.model}', but profile {profile.name} "
                           f"measures '{profile.model}'")
    if profile.url is None and profile.model not in bundled_models():
        raise ServerError(f"'{profile.model}' is not a bundled model ({', '.join(bundled_models())}); set "
                          "[model] url in the profile or pass --url to check a model on a running Triton")
    run_dir = Path(run_dir)
    results_path = run_dir / RESULTS_FILE
    if results_path.exists():
        raise CompareError(f"{run_dir} already holds results; pick another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    with open_server(profile.url, run_dir, [profile.model]) as srv:
        session = ModelSession(srv.control, profile.model)
        try:
            readback = session.open()
            env = collect(srv, profile.model, profile.sha256, version=profile.version, metrics_url=metrics_url)
            mismatches, _, _ = differences(base.environment, env)
            if mismatches and not options.allow_env_mismatch:
                raise EnvironmentMismatch(
                    f"baseline {baseline} was measured in a different environment (" + "; ".join(mismatches)
                    + "); re-save the baseline in this environment, or pass --allow-env-mismatch")

            loaded_spec = cfgmod.current_spec(readback)
            if config == "current":
                spec, key, applied = loaded_spec, loaded_spec.candidate_id, None
            else:
                key = base.recommended if config == "recommended" else config
                if key is None:
                    raise CompareError(f"{baseline} names no recommended config (it was not saved from a "
                                       "sweep); use --config current")
                if key not in base.configs:
                    raise CompareError(f"{baseline} has no config '{key}' (it has: {', '.join(base.configs)})")
                spec = cfgmod.CandidateSpec.from_dict(base.configs[key].spec)
                applied = cfgmod.make_candidate(original_config(profile, srv, readback), spec,
                                                first_dim_is_batch=profile.first_dim_is_batch)
            if key not in base.configs:
                have = ", ".join(c.label for c in base.configs.values())
                raise CompareError(
                    f"the model as loaded has config {key}, which {baseline} has no measurements of "
                    f"(it has: {have}); pass --config recommended to measure the baseline's recommended "
                    "config, or save a baseline of this config")
            levels = sorted(p for p, d in base.configs[key].points.items() if d.ok)
            if not levels:
                raise CompareError(f"{baseline}: config {key} has no successful load point to compare with")

            is_original = applied is None
            append_record(results_path, {
                "schema": SCHEMA, "type": "run", "command": "check", "profile": profile.name,
                "profile_sha256": profile.sha256, "model": profile.model, "version": profile.version,
                "server": srv.describe(), "tuner_version": __version__,
                "started_at": env["started_at"], "settings": dict(profile.measurement.__dict__),
                "baseline": str(baseline), "config": config, "environment": env,
            })
            measured_cfg = readback if is_original else session.apply(applied)
            append_record(results_path, CandidateRecord(
                spec=spec, status="loaded", config_json=cfgmod.config_to_json(measured_cfg),
                is_baseline=is_original).to_record())
            plan = build_request(measured_cfg, profile.model, profile.version, profile.shapes, profile.data)

            def record(m: Measurement) -> None:
                append_record(results_path, m.to_record())
                if on_point is not None:
                    on_point(m)

            cid = "baseline" if is_original else spec.candidate_id
            points = eventloop.run(measure_points(srv, profile.model, profile.version, plan, levels,
                                                profile.measurement, cid, record,
                                                metrics_url=env.get("metrics_url") if env.get("gpus_known") else None))
        finally:
            session.restore()
    if points and all(p.status == "failed" for p in points):
        raise LoadError(f"every request failed: {points[0].first_error}")
    comparison = compare(base, dataset_from_results(results_path), options)
    write_atomic(run_dir / "comparison.json", json.dumps(to_json(comparison), indent=2) + "\n")
    write_atomic(run_dir / "comparison.md", to_markdown(comparison))
    return CheckOutcome(run_dir, key, comparison, time.monotonic() - started)
