"""A run's outputs, computed from its stored files alone (no server):
summary.json, recommended/config.pbtxt, recommended/config.diff, report.html.

`tuner sweep` calls `finalize_run` at the end; `tuner report RUN_DIR` calls
it again to re-render without re-measuring.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuner import config as cfgmod
from tuner.errors import StoreError
from tuner.profile import load_run_profile
from tuner.report.confirmation import batch_histograms
from tuner.report.steps import read_steps, shared_latencies, step_times, write_recommended
from tuner.search.confirm import final as final_recommendation
from tuner.search.recommend import OperatingPoint, Recommendation
from tuner.results.rundir import RunLock
from tuner.results.store import RESULTS_FILE, ResultsFile, RunResults, json_safe, load_results, write_atomic


def _point_summary(p: OperatingPoint | None, results: RunResults) -> dict | None:
    if p is None:
        return None
    cand = results.candidates.get(p.candidate_id)
    spec = cand.spec if cand else None
    if isinstance(spec, cfgmod.JointSpec):  # several models: each changed model's fields under "steps"
        return {"candidate_id": p.candidate_id, "steps": {m: s.to_dict() for m, s in spec.steps},
                "concurrency": p.concurrency, "throughput_infer_per_s": p.throughput_infer_per_s,
                "latency_ms": dict(p.latency_ms), "server_ms": p.server_ms}
    return {
        "candidate_id": p.candidate_id,
        "max_batch_size": spec.max_batch_size if spec else None,
        "max_queue_delay_us": (spec.max_queue_delay_us if spec and (spec.dynamic_batching or spec.sequence)
                               else None),
        # a stateful model's sequence batcher: {"strategy", "max_candidate_sequences"}
        "sequence_batching": spec.sequence.to_dict() if spec and spec.sequence else None,
        "preferred_batch_size": list(spec.preferred_batch_size) if spec else None,
        "dynamic_batching": spec.dynamic_batching if spec else None,
        "instance_count": spec.instance_count if spec else None,
        "concurrency": p.concurrency,
        "throughput_infer_per_s": p.throughput_infer_per_s,
        "latency_ms": dict(p.latency_ms),
        "server_ms": p.server_ms,
    }


def _confirmation_summary(conf) -> dict:
    """summary.json's confirmation fields (see tuner/search/confirm.py for the method)."""
    if conf is None:
        return {"confirmation": None, "tied_with": [], "gain_vs_baseline": None, "keep_current_config": False}
    return {"confirmation": conf.to_dict(), "tied_with": list(conf.tied_with),
            "gain_vs_baseline": conf.gain.to_dict() if conf.gain is not None else None,
            "keep_current_config": conf.keep_current}


def build_summary(results: RunResults, rec: Recommendation, profile_name: str, duration_s: float,
                  strategy: str | None = None, measure_s: float | None = None, confirmation=None) -> dict:
    run = results.run
    loaded = [c for c in results.candidates.values() if c.status == "loaded" and not c.is_baseline]
    failed = [c for c in results.candidates.values() if c.status == "failed"]
    skipped = [c for c in results.candidates.values() if c.status == "skipped"]
    from tuner.search.plan import capacity_of

    capacity = capacity_of(results, rec, rec.best.candidate_id) if rec.best is not None else None
    return json_safe({
        "schema": 1,
        "profile": profile_name,
        "model": run.model if run else None,
        "server": {"url": (run.server.url or None) if run else None,
                   "version": (run.server.version or None) if run else None},
        "recommended": _point_summary(rec.best, results),
        "runner_up": _point_summary(rec.runner_up, results),
        "baseline": _point_summary(rec.baseline, results),
        "closest": _point_summary(rec.closest, results),
        "constraints": rec.constraints.to_dict(),
        "goal": rec.goal,
        "binding": rec.binding,
        "reason": rec.reason,
        "unchecked": list(rec.unchecked),  # constraints that could not be checked ("not available")
        "candidates_measured": len(loaded),
        "candidates_failed": len(failed),
        "candidates_skipped": len(skipped),
        "failed": [{"candidate_id": c.candidate_id, "reason": c.reason} for c in failed],
        "skipped": [{"candidate_id": c.candidate_id, "reason": c.reason} for c in skipped],
        "search": {"strategy": strategy, "load_points": sum(1 for p in results.points if p.status == "ok"),
                   "measure_s": measure_s, "confirm_visits": len(results.confirmation)},
        **_confirmation_summary(confirmation),
        # per candidate, the batch sizes Triton ran at its at-budget load (statistics API)
        "batch_sizes": batch_histograms(results, rec, confirmation),
        # one replica (server/GPU) of the recommended config, within the constraints; `tuner plan` sizes a fleet
        "capacity_per_replica_infer_per_s": capacity,
        # records cut short by a crash, moved aside (never dropped) before the run went on
        "torn_records_set_aside": [{"size_bytes": t.size_bytes, "offset_bytes": t.offset_bytes,
                                    "kept_in": t.kept_in} for t in results.torn],
        "restore_failures": [r.error for r in results.restore_failures],
        "duration_s": duration_s,
    })


def recommended_config(run_dir: Path, results: RunResults, rec: Recommendation, profile) -> tuple[str, str, str]:
    """(original pbtxt, recommended pbtxt, unified diff)."""
    orig_path = run_dir / "original" / "config.pbtxt"
    if not orig_path.exists():
        raise StoreError(f"{run_dir} has no original/config.pbtxt; the sweep stopped before reading the model")
    original = cfgmod.read_config(orig_path)
    if rec.best is None or rec.best.candidate_id == "baseline":
        chosen = original
    else:
        spec = results.candidates[rec.best.candidate_id].spec
        chosen = cfgmod.make_candidate(original, spec, first_dim_is_batch=profile.first_dim_is_batch)
    return (cfgmod.format_config(original), cfgmod.format_config(chosen),
            cfgmod.diff_configs(original, chosen))


def report_run(run_dir: Path) -> dict:
    """`tuner report RUN`: re-render a run's outputs, holding its lock (a run still going is
    refused); a torn last record left by a crash is set aside first, as a resumed run would."""
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).exists():
        raise StoreError(f"{run_dir} has no {RESULTS_FILE}; pass a run folder written by `tuner sweep`")
    with RunLock(run_dir):
        ResultsFile(run_dir / RESULTS_FILE).repair_tail()
        return finalize_run(run_dir)


def finalize_run(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).exists():
        raise StoreError(f"{run_dir} has no {RESULTS_FILE}; pass a run folder written by `tuner sweep`")
    profile = load_run_profile(run_dir)
    profile_name = profile.name
    results = load_results(run_dir / RESULTS_FILE)
    rec, conf = final_recommendation(results, profile)
    duration = results.duration_s
    measure_s = sum(profile.measurement.warmup_s + sum(w.duration_s for w in p.windows) for p in results.points)
    summary = build_summary(results, rec, profile_name, duration, strategy=profile.search.strategy,
                            measure_s=measure_s, confirmation=conf)
    listed = {spec.candidate_id for spec in profile.search.specs()}
    # candidates the search added by refining max_batch_size between or beyond the listed values
    summary["search"]["refined"] = [cid for cid, c in results.candidates.items()
                                    if not c.is_baseline and cid not in listed]
    joint = read_steps(run_dir)
    if joint is not None:  # several models tuned together: a config and a diff per model
        original_txt, recommended_txt, diff, files = write_recommended(run_dir, results, rec, joint["models"])
        summary.update({"kind": joint["kind"], "steps": joint["models"], "recommended_configs": files,
                        "step_times_ms": step_times(results, rec)})
        if profile.constraints.models:  # models sharing the server: each one's latency beside its budget
            summary["model_latency_ms"] = shared_latencies(results, rec, profile.constraints.models)
    else:
        original_txt, recommended_txt, diff = recommended_config(run_dir, results, rec, profile)
        write_atomic(run_dir / "recommended" / "config.pbtxt", recommended_txt)
        write_atomic(run_dir / "recommended" / "config.diff", diff)
        model = results.run.model if results.run else ""
        if model and Path(model).name == model and model not in (".", ".."):  # a name, never a path out
            # the same under the model's name, as runs that tune several models write each one
            write_atomic(run_dir / "recommended" / model / "config.pbtxt", recommended_txt)
            write_atomic(run_dir / "recommended" / model / "config.diff", diff)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    from tuner.report.html import build_report

    html = build_report(results, rec, profile, original_txt, recommended_txt, diff, summary, conf)
    write_atomic(run_dir / "report.html", html)
    return summary
