"""Bench section: smart search vs grid search on a family of response surfaces.

Each surface (`tuner/search/surfaces.py`: linear, knee, overhead, padded, shared,
jitter) is the bundled `synthetic` model with the surface's cost parameters in its
config, served by its own embedded Triton. On it, `search_section()` runs a grid sweep
and a smart sweep of the surface's space (each without the confirmation phase: this
compares the searches), then measures the two picks again side by side, interleaved
(A, B, A, B, ... each at the load its sweep recommended, ROUNDS rounds), so the ratio
is not the difference between two runs minutes apart. Per surface:

    smart_vs_grid_throughput_ratio  smart's pick / grid's pick, re-measured side by side
                                    (geometric mean of the per-round ratios; 1.0 without
                                    measuring when both picked the same config and load)
    smart_vs_grid_time_ratio        smart's measurement time / grid's (sum over load
                                    points of warm-up + every window's duration)
    smart_vs_grid_wall_ratio        the same for wall time (model loads included)
    grid_measure_s, smart_measure_s, grid_points, smart_points, grid_pick, smart_pick, ...
    earlier_errors                  a first attempt's server error, when the surface was run
                                    again on a fresh server (SERVER_ATTEMPTS)

Targets on every surface: throughput ratio >= 0.97 in a time ratio <= 0.25.

    python bench/bench_search.py [--surfaces linear,knee] [--json FILE] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROUNDS = 4  # side-by-side rounds of the two picks
SERVER_ATTEMPTS = 2  # per surface, each on a fresh server: a second only after a server error

PROFILE = """\
# bench_search: {strategy} on the {surface} surface
[model]
name = "synthetic"
url = "{url}"

[search]
{search}strategy = "{strategy}"
confirm = false

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


def surface_repository(work: Path, surface) -> Path:
    """A model repository whose `synthetic` model carries the surface's parameters."""
    from tuner.server.install import prepare_repository

    repo = prepare_repository(work / "repo", ["synthetic"])
    cfg = repo / "synthetic" / "config.pbtxt"
    lines = [ln for ln in cfg.read_text(encoding="utf-8").splitlines() if not ln.startswith("parameters:")]
    cfg.write_text("\n".join(lines) + "\n" + surface.pbtxt_parameters(), encoding="utf-8")
    return repo


def _ready(url: str, timeout_s: float = 180.0) -> None:
    """The shared server may take a moment after the previous sweep put its model back."""
    from tuner.server.control import ServerControl

    ctl = ServerControl(url)
    try:
        ctl.wait_ready(timeout_s)
    finally:
        ctl.close()


def run_one(strategy: str, work: Path, surface, url: str, reuse: Path | None = None) -> dict:
    """One sweep; with `reuse` (a kept run folder of this strategy and surface), its stored
    result instead: a development aid only, the reported runs measure both."""
    from tuner.profile import load_profile
    from tuner.results.store import load_results
    from tuner.sweep import run_sweep

    path = work / f"bench-{strategy}.toml"
    path.write_text(PROFILE.format(strategy=strategy, surface=surface.name, url=url, search=surface.profile_search(),
                                   budget_ms=surface.budget_ms), encoding="utf-8")
    profile = load_profile(str(path))
    run_dir = work / f"run-{strategy}"
    _ready(url)
    t0 = time.monotonic()
    if reuse is not None and (reuse / "summary.json").exists():
        shutil.copytree(reuse, run_dir)
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
        wall = load_results(run_dir).duration_s
    else:
        summary = run_sweep(profile, run_dir).summary
        wall = time.monotonic() - t0
    measure_s, points = measurement_seconds(run_dir, profile.measurement.warmup_s)
    rec = summary.get("recommended") or {}
    return {
        "wall_s": wall, "measure_s": measure_s, "points": points,
        "candidates_measured": summary.get("candidates_measured"),
        "candidates_skipped": summary.get("candidates_skipped"),
        "pick": rec.get("candidate_id"), "concurrency": rec.get("concurrency"),
        "throughput_infer_per_s": rec.get("throughput_infer_per_s") or 0.0,
        "latency_p99_ms": (rec.get("latency_ms") or {}).get("p99"),
        "binding": summary.get("binding"),
        "run_dir": str(run_dir),
    }


async def _side_by_side(url: str, picks: list[tuple[str, object, int]], rounds: int) -> list[list[float]]:
    """Throughput of each pick per round, the picks measured in turn (A, B, A, B, ...)."""
    from tuner.load.client import LoadClient
    from tuner.load.request import build_request
    from tuner.load.spec import LoadSettings
    from tuner.server.control import ServerControl

    _ready(url)
    ctl = ServerControl(url)
    settings = LoadSettings(warmup_s=0.5, window_s=0.5, min_windows=3, max_windows=3)
    out: list[list[float]] = [[] for _ in picks]
    try:
        async with LoadClient(url, "synthetic") as client:
            for _ in range(rounds):
                for i, (_, cfg, conc) in enumerate(picks):
                    served = ctl.load("synthetic", cfg)
                    plan = build_request(served, "synthetic")
                    samples = await client.closed_loop(plan, conc, settings)
                    done = sum(w.completed for w in samples.windows)
                    span = sum(w.duration_s for w in samples.windows)
                    out[i].append(done / span if span else 0.0)
    finally:
        ctl.close()
    return out


def remeasure(url: str, grid: dict, smart: dict, rounds: int = ROUNDS) -> tuple[float | None, list]:
    """smart's pick / grid's pick, measured again side by side (geometric mean of round ratios)."""
    from tuner import config as cfgmod
    from tuner.results.store import load_results

    if grid["pick"] is None or smart["pick"] is None:
        return None, []
    if (grid["pick"], grid["concurrency"]) == (smart["pick"], smart["concurrency"]):
        return 1.0, []
    picks = []
    for run in (grid, smart):
        res = load_results(Path(run["run_dir"]))
        original = cfgmod.read_config(Path(run["run_dir"]) / "original" / "config.pbtxt")
        cand = res.candidates[run["pick"]]
        cfg = original if cand.is_baseline else cfgmod.make_candidate(original, cand.spec)
        picks.append((run["pick"], cfg, int(run["concurrency"])))
    g, s = asyncio.run(_side_by_side(url, picks, rounds))
    logs = [math.log(b / a) for a, b in zip(g, s) if a > 0 and b > 0]
    ratio = math.exp(sum(logs) / len(logs)) if logs else None
    return ratio, [{"grid": a, "smart": b} for a, b in zip(g, s)]


def one_surface(surface, keep: Path | None = None, reuse_grid: Path | None = None) -> dict:
    from tuner.server.embedded import EmbeddedServer

    work = Path(tempfile.mkdtemp(prefix=f"tuner-bench-{surface.name}-"))
    try:
        repo = surface_repository(work, surface)
        with EmbeddedServer(repo.resolve(), work / "tritonserver.log") as srv:
            load_before = os.getloadavg()[0]
            grid = run_one("grid", work, surface, srv.url,
                           reuse_grid / surface.name / "run-grid" if reuse_grid is not None else None)
            smart = run_one("smart", work, surface, srv.url)
            # in a process of its own: gRPC's asyncio poller stays bound to the sweeps' closed
            # event loops, and a second asyncio.run here fills the log with its complaints
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
                ratio, rounds = ex.submit(remeasure, srv.url, grid, smart).result()
            load_after = os.getloadavg()[0]
    finally:
        if keep is not None:
            dest = Path(keep) / surface.name
            dest.mkdir(parents=True, exist_ok=True)
            for d in work.glob("run-*"):
                shutil.copytree(d, dest / d.name, dirs_exist_ok=True)
            if (work / "tritonserver.log").exists():
                shutil.copy2(work / "tritonserver.log", dest / "tritonserver.log")
        shutil.rmtree(work, ignore_errors=True)
    return {
        "smart_vs_grid_throughput_ratio": ratio,
        "smart_vs_grid_time_ratio": smart["measure_s"] / grid["measure_s"] if grid["measure_s"] else None,
        "smart_vs_grid_wall_ratio": smart["wall_s"] / grid["wall_s"] if grid["wall_s"] else None,
        "grid_measure_s": grid["measure_s"], "smart_measure_s": smart["measure_s"],
        "grid_points": grid["points"], "smart_points": smart["points"],
        "grid_pick": f"{grid['pick']}@{grid['concurrency']}", "smart_pick": f"{smart['pick']}@{smart['concurrency']}",
        "grid_reused": reuse_grid is not None,
        "latency_budget_ms": surface.budget_ms,
        "side_by_side": rounds,
        "load_avg_1m": [load_before, load_after],
        "grid": {k: v for k, v in grid.items() if k != "run_dir"},
        "smart": {k: v for k, v in smart.items() if k != "run_dir"},
    }


def search_section(names: list[str] | None = None, keep: Path | None = None, echo=print,
                   reuse_grid: Path | None = None) -> dict:
    """Grid, smart and the side-by-side re-measurement on each surface (see the module docstring)."""
    from tuner.errors import Interrupted, ServerError
    from tuner.search.surfaces import SURFACES

    out: dict = {"surfaces": {}}
    for name in names or list(SURFACES):
        errors: list[str] = []
        r = None
        # a server that dies (the 2.51 binary segfaulted once in six passes, mid-sweep) says nothing
        # about search: the surface runs once more on a fresh server, and the failure is kept
        for _attempt in range(SERVER_ATTEMPTS):
            try:
                r = one_surface(SURFACES[name], keep, reuse_grid)
                break
            except Interrupted:
                raise  # Ctrl-C or a kill ends the bench, not one surface
            except Exception as err:  # one surface's server trouble must not lose the others' results
                errors.append(f"{type(err).__name__}: {err}")
                echo(f"  {name:9s} failed: {errors[-1]}")
                if not isinstance(err, ServerError):
                    break
        if r is None:
            out["surfaces"][name] = {"error": errors[-1], "earlier_errors": errors[:-1],
                                     "smart_vs_grid_throughput_ratio": None, "smart_vs_grid_time_ratio": None}
            continue
        r["earlier_errors"] = errors
        out["surfaces"][name] = r
        thr, tim = r["smart_vs_grid_throughput_ratio"], r["smart_vs_grid_time_ratio"]
        echo(f"  {name:9s} throughput {thr if thr is None else format(thr, '.3f')}  time {tim:.3f}  "
             f"grid {r['grid_pick']} ({r['grid_points']} points)  smart {r['smart_pick']} ({r['smart_points']} "
             f"points)  load {r['load_avg_1m'][0]:.1f}-{r['load_avg_1m'][1]:.1f}")
    ratios = [r["smart_vs_grid_throughput_ratio"] for r in out["surfaces"].values()]
    times = [r["smart_vs_grid_time_ratio"] for r in out["surfaces"].values()]
    out["worst_throughput_ratio"] = min((x for x in ratios if x is not None), default=None)
    out["worst_time_ratio"] = max((x for x in times if x is not None), default=None)
    out["targets_met"] = all(x is not None and x >= 0.97 for x in ratios) and all(
        x is not None and x <= 0.25 for x in times)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/bench_search.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--surfaces", default="", help="comma-separated surface names (default: all)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    ap.add_argument("--keep", type=Path, help="copy the run folders here")
    ap.add_argument("--reuse-grid", type=Path, help="(development) take grid's runs from a --keep folder")
    args = ap.parse_args(argv)
    names = [s for s in args.surfaces.split(",") if s] or None
    from tuner.errors import Interrupted

    try:
        result = search_section(names, keep=args.keep, reuse_grid=args.reuse_grid)
    except Interrupted as err:
        print(f"bench_search: {err}", file=sys.stderr)
        return err.exit_code
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
