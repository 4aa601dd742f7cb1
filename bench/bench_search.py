"""Bench section: smart search vs grid search on the embedded synthetic model.

`search_section()` runs two sweeps over the same space on the bundled
`synthetic` model (2 ms per execution + 0.5 ms per batched item), each on its
own embedded Triton: max_batch_size 1..32, queue delay 0 / 500 / 2000 us,
1 instance, concurrency 1..64, p99 <= 40 ms. It returns how close smart gets
to grid's answer and at what share of grid's measurement time:

    smart_vs_grid_throughput_ratio  smart's budget-bound infer/s / grid's best
    smart_vs_grid_time_ratio        smart's measurement time / grid's (sum over load
                                    points of warm-up + every window's duration)
    smart_vs_grid_wall_ratio        the same for wall time (server start, model loads included)
    grid_s, smart_s                 wall seconds of each sweep
    grid_measure_s, smart_measure_s measurement seconds (as in the time ratio)
    grid_points, smart_points       load points measured
    ...                             the recommended candidates and their numbers

Targets: throughput ratio >= 0.97 with a time ratio <= 0.25, and smart's wall
time <= 50% of 213 s (Model Analyzer's brute search of 45 measurements on the
same host).

    python bench/bench_search.py [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

MODEL_ANALYZER_S = 213.0

PROFILE = """\
# bench_search: smart vs grid on the synthetic model
[model]
name = "synthetic"

[search]
max_batch_size = [1, 2, 4, 8, 16, 24, 32]
max_queue_delay_us = [0, 500, 2000]
preferred_batch_size = "none"
instance_count = [1]
concurrency = [1, 2, 4, 8, 16, 32, 64]
strategy = "{strategy}"

[constraints]
latency_percentile = "p99"
latency_budget_ms = {budget_ms}

[objective]
goal = "max_throughput"

[measurement]
warmup_s = 0.5
window_s = 0.5
min_windows = 3
max_windows = 4
stability_pct = 10.0
"""


def measurement_seconds(run_dir: Path, warmup_s: float) -> tuple[float, int]:
    """(warm-up + window durations summed over every load point, points) of a run folder."""
    from tuner.results.store import read_records

    total, points = 0.0, 0
    for rec in read_records(Path(run_dir) / "results.jsonl"):
        if rec.get("type") != "point":
            continue
        points += 1
        total += warmup_s + sum(float(w.get("duration_s", 0.0)) for w in rec.get("windows", []))
    return total, points


def run_one(strategy: str, work: Path, budget_ms: float = 40.0) -> dict:
    from tuner.profile import load_profile
    from tuner.results.store import load_results
    from tuner.sweep import run_sweep

    path = work / f"bench-{strategy}.toml"
    path.write_text(PROFILE.format(strategy=strategy, budget_ms=budget_ms), encoding="utf-8")
    profile = load_profile(str(path))
    run_dir = work / f"run-{strategy}"
    t0 = time.monotonic()
    outcome = run_sweep(profile, run_dir)
    wall = time.monotonic() - t0
    measure_s, points = measurement_seconds(run_dir, profile.measurement.warmup_s)
    rec = outcome.summary.get("recommended") or {}
    res = load_results(run_dir)
    skipped = sum(1 for c in res.candidates.values() if c.status == "skipped")
    return {
        "wall_s": wall,
        "measure_s": measure_s,
        "points": points,
        "candidates_measured": outcome.summary.get("candidates_measured"),
        "candidates_skipped": skipped,
        "recommended": rec.get("candidate_id"),
        "throughput_infer_per_s": rec.get("throughput_infer_per_s") or 0.0,
        "latency_p99_ms": (rec.get("latency_ms") or {}).get("p99"),
        "concurrency": rec.get("concurrency"),
        "run_dir": str(run_dir),
    }


def search_section(budget_ms: float = 40.0, keep: Path | None = None) -> dict:
    """Grid then smart over the same space, each on a fresh embedded Triton."""
    work = Path(tempfile.mkdtemp(prefix="tuner-bench-search-"))
    try:
        grid = run_one("grid", work, budget_ms)
        smart = run_one("smart", work, budget_ms)
    finally:
        if keep is not None:
            keep = Path(keep)
            keep.mkdir(parents=True, exist_ok=True)
            for d in work.glob("run-*"):
                shutil.copytree(d, keep / d.name, dirs_exist_ok=True)
        shutil.rmtree(work, ignore_errors=True)
    g_thr, s_thr = grid["throughput_infer_per_s"], smart["throughput_infer_per_s"]
    out = {
        "smart_vs_grid_throughput_ratio": s_thr / g_thr if g_thr else None,
        "smart_vs_grid_time_ratio": smart["measure_s"] / grid["measure_s"] if grid["measure_s"] else None,
        "smart_vs_grid_wall_ratio": smart["wall_s"] / grid["wall_s"] if grid["wall_s"] else None,
        "grid_s": grid["wall_s"],
        "smart_s": smart["wall_s"],
        "grid_measure_s": grid["measure_s"],
        "smart_measure_s": smart["measure_s"],
        "grid_points": grid["points"],
        "smart_points": smart["points"],
        "smart_vs_model_analyzer_wall_ratio": smart["wall_s"] / MODEL_ANALYZER_S,
        "latency_budget_ms": budget_ms,
        "grid": {k: v for k, v in grid.items() if k != "run_dir"},
        "smart": {k: v for k, v in smart.items() if k != "run_dir"},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/bench_search.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--keep", type=Path, help="copy both run folders here")
    ap.add_argument("--latency-budget-ms", type=float, default=40.0)
    args = ap.parse_args(argv)
    result = search_section(args.latency_budget_ms, keep=args.keep)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
