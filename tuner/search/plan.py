"""`tuner plan RUN_DIR --target-rps N`: capacity from a run's stored results alone.

One replica is one server (one GPU) running the recommended config; its
instances share that GPU. A replica serves at most the recommended
candidate's best throughput within the constraints (`throughput_at_budget`,
the most infer/s any of its measured points gave while meeting them); with
`headroom` kept free for bursts, a replica is given at most
`throughput_at_budget * (1 - headroom)`, so

    replicas            = ceil(N / (throughput_at_budget * (1 - headroom)))
    load per replica    = N / replicas
    expected latency    = the recommended candidate's measured throughput-vs-latency
                          curve, interpolated linearly at the load per replica
    cost per million    = replicas * price per GPU hour / (N * 3600) * 1e6

The curve is the candidate's load points in concurrency order, keeping each
point that adds throughput (a closed loop's throughput grows with load;
noise that makes it dip is dropped). Below the lowest measured throughput the
lowest point's latency is used (an upper estimate, flagged).

Pure functions over `RunResults` + `Recommendation`; `make_plan` reads a run folder.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuner.search.confirm import final
from tuner.search.recommend import LATENCY_KEYS, Recommendation
from tuner.results.records import Measurement
from tuner.results.store import RunResults, json_safe

DEFAULT_HEADROOM = 0.3


def replicas_needed(target_rps: float, throughput_at_budget: float, headroom: float = DEFAULT_HEADROOM) -> int:
    """Servers needed so that none runs above (1 - headroom) of its capacity."""
    usable = throughput_at_budget * (1.0 - headroom)
    if usable <= 0:
        raise ValueError("a replica's usable throughput must be > 0")
    # a hair of slack so that 1000 / (1250 * 0.8) is 1 replica, not 2 by rounding
    return max(1, math.ceil(target_rps / usable - 1e-9))


def cost_per_million(replicas: int, price_per_gpu_hour: float, target_rps: float) -> float:
    """Dollars (or whatever the price is in) per million inferences at the target load."""
    return replicas * price_per_gpu_hour / (target_rps * 3600.0) * 1e6


def latency_curve(points: list[Measurement]) -> list[tuple[float, dict[str, float]]]:
    """(throughput, latency percentiles in ms) along a candidate's load points, throughput rising."""
    curve: list[tuple[float, dict[str, float]]] = []
    for m in sorted(points, key=lambda m: m.concurrency):
        if m.status != "ok" or not m.windows:
            continue
        s = m.summary()
        lat = {k: s.latency_ms[k] for k in LATENCY_KEYS}
        if s.completed == 0 or any(v != v for v in lat.values()):
            continue
        if not curve or s.throughput_infer_per_s > curve[-1][0]:
            curve.append((s.throughput_infer_per_s, lat))
    return curve


def interpolate_latency(curve: list[tuple[float, dict[str, float]]], load: float) -> tuple[dict[str, float], str]:
    """Latency percentiles at `load` infer/s on the curve, and a note when outside it."""
    if not curve:
        return {k: float("nan") for k in LATENCY_KEYS}, "no measured curve"
    if load <= curve[0][0]:
        return dict(curve[0][1]), (f"below the lowest measured load ({curve[0][0]:.1f} infer/s): "
                                   "the lowest point's latency, an upper estimate")
    if load >= curve[-1][0]:
        return dict(curve[-1][1]), (f"at or beyond the highest measured load ({curve[-1][0]:.1f} infer/s): "
                                    "the highest point's latency")
    for (x0, l0), (x1, l1) in zip(curve, curve[1:]):
        if x0 <= load <= x1:
            t = (load - x0) / (x1 - x0)
            return {k: l0[k] + t * (l1[k] - l0[k]) for k in LATENCY_KEYS}, ""
    return dict(curve[-1][1]), ""  # pragma: no cover - the loop always finds the segment


def capacity_of(results: RunResults, rec: Recommendation, candidate_id: str) -> float | None:
    """A candidate's most infer/s within the constraints (None: no feasible point)."""
    return max((p.throughput_infer_per_s for p in rec.feasible if p.candidate_id == candidate_id), default=None)


@dataclass
class CapacityPlan:
    feasible: bool
    target_rps: float
    headroom: float
    cost_per_gpu_hour: float | None
    goal: str
    latency_percentile: str
    latency_budget_ms: float
    candidate_id: str | None = None
    config: dict | None = None
    throughput_at_budget: float | None = None      # infer/s one replica serves within the constraints
    usable_per_replica: float | None = None        # ... less the headroom
    replicas: int | None = None
    load_per_replica: float | None = None
    utilization: float | None = None               # load per replica / throughput at budget
    expected_latency_ms: dict[str, float] = field(default_factory=dict)  # at the load per replica
    expected_p99_ms: float | None = None
    curve_note: str = ""
    cost_per_hour: float | None = None
    cost_per_million: float | None = None
    binding: str = ""
    reason: str = ""
    closest: dict | None = None
    unchecked: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        return json_safe(d)


def check_inputs(target_rps: float, headroom: float, cost_per_gpu_hour: float | None) -> None:
    if not (target_rps > 0 and math.isfinite(target_rps)):
        raise ValueError(f"--target-rps must be > 0, got {target_rps:g}")
    if not 0 <= headroom < 1:
        raise ValueError(f"--headroom is a fraction of a replica kept free: 0 <= headroom < 1, got {headroom:g}")
    if cost_per_gpu_hour is not None and not (cost_per_gpu_hour >= 0 and math.isfinite(cost_per_gpu_hour)):
        raise ValueError(f"--cost-per-gpu-hour must be >= 0, got {cost_per_gpu_hour:g}")


def plan_from(results: RunResults, rec: Recommendation, target_rps: float, headroom: float = DEFAULT_HEADROOM,
              cost_per_gpu_hour: float | None = None) -> CapacityPlan:
    check_inputs(target_rps, headroom, cost_per_gpu_hour)
    c = rec.constraints
    plan = CapacityPlan(feasible=False, target_rps=target_rps, headroom=headroom,
                        cost_per_gpu_hour=cost_per_gpu_hour, goal=rec.goal,
                        latency_percentile=c.latency_percentile, latency_budget_ms=c.latency_budget_ms,
                        binding=rec.binding, unchecked=list(rec.unchecked))
    if rec.best is None:
        plan.reason = rec.reason if rec.reason.startswith("nothing meets") else f"nothing meets the constraints: {rec.reason}"
        if rec.closest is not None:
            plan.closest = rec.closest.to_dict()
        return plan
    cid = rec.best.candidate_id
    cap = capacity_of(results, rec, cid) or rec.best.throughput_infer_per_s
    cand = results.candidates.get(cid)
    replicas = replicas_needed(target_rps, cap, headroom)
    load = target_rps / replicas
    lat, note = interpolate_latency(latency_curve(results.points_of(cid)), load)
    plan.feasible = True
    plan.candidate_id = cid
    plan.config = cand.spec.to_dict() if cand is not None else None
    plan.throughput_at_budget = cap
    plan.usable_per_replica = cap * (1.0 - headroom)
    plan.replicas = replicas
    plan.load_per_replica = load
    plan.utilization = load / cap
    plan.expected_latency_ms = lat
    plan.expected_p99_ms = lat.get("p99")
    plan.curve_note = note
    if cost_per_gpu_hour is not None:
        plan.cost_per_hour = replicas * cost_per_gpu_hour
        plan.cost_per_million = cost_per_million(replicas, cost_per_gpu_hour, target_rps)
    plan.reason = (f"{replicas} replica(s) of {cid} ({cap:.1f} infer/s each within the budget, "
                   f"{headroom:.0%} kept free) serve {target_rps:g} infer/s at {load:.1f} infer/s per replica")
    return plan


def make_plan(run_dir: Path, target_rps: float, headroom: float = DEFAULT_HEADROOM,
              cost_per_gpu_hour: float | None = None) -> CapacityPlan:
    """The plan for a run folder written by `tuner sweep` (no server)."""
    from tuner.errors import StoreError
    from tuner.profile import load_run_profile
    from tuner.results.store import RESULTS_FILE, load_results

    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).exists():
        raise StoreError(f"{run_dir} has no {RESULTS_FILE}; pass a run folder written by `tuner sweep`")
    profile = load_run_profile(run_dir)
    results = load_results(run_dir / RESULTS_FILE)
    rec, _confirmation = final(results, profile)  # the run's recommendation, confirmation included
    return plan_from(results, rec, target_rps, headroom, cost_per_gpu_hour)


def capacity_steps(throughput_at_budget: float, headroom: float, max_replicas: int = 12) -> tuple[list[float], list[int]]:
    """Replicas needed vs target load, as the corners of a step line (for the report):
    r replicas cover target loads in ((r - 1) * usable, r * usable]."""
    usable = throughput_at_budget * (1.0 - headroom)
    xs: list[float] = []
    ys: list[int] = []
    for r in range(1, max_replicas + 1):
        xs += [(r - 1) * usable, r * usable]
        ys += [r, r]
    return xs, ys


def print_plan(plan: CapacityPlan, console=None) -> None:
    """The plan as a terminal table (rich)."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        console = console if console.is_terminal else Console(width=140)
    pct = plan.latency_percentile
    if not plan.feasible:
        console.print("[bold red]nothing meets the constraints[/bold red]")
        if plan.closest:
            cl = plan.closest
            console.print(f"closest candidate: {cl['candidate_id']} at {cl['throughput_infer_per_s']:.1f} infer/s, "
                          f"{pct} {cl['latency_ms'][pct]:.2f} ms (concurrency {cl['concurrency']})", markup=False)
        console.print(plan.reason, markup=False)
        return
    t = Table(title=f"capacity for {plan.target_rps:g} infer/s ({pct} <= {plan.latency_budget_ms:g} ms)")
    t.add_column("", style="bold")
    t.add_column("value", justify="right")
    cfg = plan.config or {}
    rows = [
        ("config (one replica = one server/GPU)", plan.candidate_id or "-"),
        ("max_batch_size / queue delay / instances",
         f"{cfg.get('max_batch_size', '-')} / {cfg.get('max_queue_delay_us', '-')} us / {cfg.get('instance_count', '-')}"),
        ("throughput per replica within the budget", f"{plan.throughput_at_budget:,.1f} infer/s"),
        (f"usable with {plan.headroom:.0%} headroom", f"{plan.usable_per_replica:,.1f} infer/s"),
        ("replicas", f"{plan.replicas}"),
        ("load per replica", f"{plan.load_per_replica:,.1f} infer/s ({plan.utilization:.0%} of capacity)"),
        ("expected p99 per replica", _ms(plan.expected_p99_ms)),
    ]
    if pct != "p99":
        rows.append((f"expected {pct} per replica", _ms(plan.expected_latency_ms.get(pct))))
    if plan.cost_per_million is not None:
        rows.append(("cost per hour", f"{plan.cost_per_hour:,.2f}"))
        rows.append(("cost per million inferences", f"{plan.cost_per_million:,.4f}"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if plan.curve_note:
        console.print(f"note: {plan.curve_note}", markup=False)
    for u in plan.unchecked:
        console.print(f"not checked: {u}", markup=False)


def _ms(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.2f} ms"
