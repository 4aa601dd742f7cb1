"""Pick the best measured (candidate, load level) under the constraints.

Pure: stored results + constraints + objective in, a `Recommendation` out.

Objectives (`[objective] goal`):
    max_throughput              most infer/s among the points meeting every constraint
    min_latency                 lowest latency (the budget's percentile) among the points that
                                reach constraints.min_throughput_infer_per_s (the required
                                throughput) within the budget
    max_throughput_per_instance most infer/s per model instance (instance_count) among the
                                points meeting every constraint
    min_energy                  the lowest GPU energy per inference (J, from the server's
                                nv_energy_consumption telemetry) among the points meeting every
                                constraint; points with no energy figure rank below those with
                                one, and where no point has one the choice falls back to max
                                throughput and says so under `unchecked`

Constraints: the latency budget on any percentile, a minimum throughput, an
error rate, and a maximum GPU memory. GPU memory comes from the server's
telemetry (`WindowSample.telemetry`, nv_gpu_memory_used_bytes, the largest
value any GPU showed in the point's windows); where a point has no GPU
telemetry (a CPU host, metrics off) the limit cannot be checked: such points
are judged on the other constraints and the recommendation lists the limit
under `unchecked` ("not available"), so it never passes silently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tuner.results.records import Measurement
from tuner.results.store import RunResults
from tuner.search.budgets import SharedModel, budget_ratios, budgets_met

LATENCY_KEYS = ("p50", "p90", "p95", "p99")
GOALS = ("max_throughput", "min_latency", "max_throughput_per_instance", "min_energy")
MIB = 1024 * 1024  # max_gpu_memory_mb is in MB as nvidia-smi shows them (MiB)


@dataclass(frozen=True)
class Constraints:
    latency_percentile: str = "p99"
    latency_budget_ms: float = 50.0
    min_throughput_infer_per_s: float = 0.0
    max_gpu_memory_mb: float | None = None
    max_error_rate: float = 0.0  # fraction of requests allowed to fail
    # several models sharing the server ([[model]]): each one's share and own budget (search/budgets.py)
    models: tuple[SharedModel, ...] = ()

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_memory_mb(summary) -> float | None:
    """The most GPU memory (MiB) any GPU used in a point's windows; None: no GPU telemetry."""
    tele = getattr(summary, "telemetry", None) or {}
    values = []
    for g in (tele.get("gpus") or {}).values():
        mem = g.get("memory_used_bytes") if isinstance(g, dict) else None
        if isinstance(mem, dict) and mem.get("max") is not None:
            values.append(float(mem["max"]))
        elif isinstance(mem, (int, float)):
            values.append(float(mem))
    return max(values) / MIB if values else None


@dataclass(frozen=True)
class OperatingPoint:
    """One candidate at one load level, with the numbers that decided."""

    candidate_id: str
    concurrency: int
    throughput_infer_per_s: float
    latency_ms: dict[str, float]
    errors: int
    stable: bool
    server_ms: dict[str, float] | None = None
    gpu_memory_mb: float | None = None
    instance_count: int = 1
    energy_j_per_infer: float | None = None  # None: no energy telemetry (see stats.energy_unavailable)

    @classmethod
    def of(cls, m: Measurement, instance_count: int = 1) -> "OperatingPoint":
        s = m.summary()
        return cls(
            candidate_id=m.candidate_id,
            concurrency=m.concurrency,
            throughput_infer_per_s=s.throughput_infer_per_s,
            latency_ms={k: s.latency_ms[k] for k in LATENCY_KEYS},
            errors=s.errors,
            stable=m.stable,
            server_ms=s.server_ms,
            gpu_memory_mb=gpu_memory_mb(s),
            instance_count=max(1, int(instance_count or 1)),
            energy_j_per_infer=(s.telemetry or {}).get("energy_j_per_infer"),
        )

    @property
    def throughput_per_instance(self) -> float:
        return self.throughput_infer_per_s / self.instance_count

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Recommendation:
    best: OperatingPoint | None
    runner_up: OperatingPoint | None
    baseline: OperatingPoint | None
    closest: OperatingPoint | None  # when nothing meets the constraints
    constraints: Constraints
    binding: str  # which limit stopped the best candidate from doing more
    reason: str
    feasible: list[OperatingPoint] = field(default_factory=list)
    goal: str = "max_throughput"
    unchecked: list[str] = field(default_factory=list)  # constraints that could not be checked, and why

    def to_dict(self) -> dict:
        return {
            "best": self.best.to_dict() if self.best else None,
            "runner_up": self.runner_up.to_dict() if self.runner_up else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "closest": self.closest.to_dict() if self.closest else None,
            "constraints": self.constraints.to_dict(),
            "goal": self.goal,
            "binding": self.binding,
            "reason": self.reason,
            "unchecked": list(self.unchecked),
        }


def error_rate(p: OperatingPoint, m: Measurement) -> float:
    total = m.summary().completed + p.errors
    return p.errors / total if total else 1.0


def meets(p: OperatingPoint, m: Measurement, c: Constraints) -> bool:
    if m.status != "ok":
        return False
    total = m.summary().completed + p.errors
    if total == 0:
        return False
    if p.errors / total > c.max_error_rate:
        return False
    if (c.max_gpu_memory_mb is not None and p.gpu_memory_mb is not None
            and p.gpu_memory_mb > c.max_gpu_memory_mb):
        return False
    lat = p.latency_ms[c.latency_percentile]
    return (lat == lat and lat <= c.latency_budget_ms and p.throughput_infer_per_s >= c.min_throughput_infer_per_s
            and budgets_met(m, c.models))


def objective_key(goal: str, pct: str):
    """Sort key of a point under a goal: larger is better."""
    def lat(p: OperatingPoint) -> float:
        v = p.latency_ms[pct]
        return v if v == v else float("inf")

    if goal == "min_latency":
        return lambda p: (-lat(p), p.throughput_infer_per_s)
    if goal == "max_throughput_per_instance":
        return lambda p: (p.throughput_per_instance, p.throughput_infer_per_s, -lat(p))
    if goal == "min_energy":
        return lambda p: (p.energy_j_per_infer is not None, -(p.energy_j_per_infer or 0.0),
                          p.throughput_infer_per_s, -lat(p))
    return lambda p: (p.throughput_infer_per_s, -lat(p))


def objective_value(goal: str, p: OperatingPoint, pct: str) -> float:
    """The number the goal optimizes: infer/s, infer/s per instance, or latency (ms, lower is better).

    min_energy: infer/s. Compute statistics bound throughput, not energy, so the smart search
    explores as for max throughput (energy per inference ~ power / throughput on one GPU);
    the recommendation then ranks the measured points by energy (`objective_key`)."""
    if goal == "min_latency":
        return p.latency_ms[pct]
    if goal == "max_throughput_per_instance":
        return p.throughput_per_instance
    return p.throughput_infer_per_s


def violation(p: OperatingPoint, m: Measurement, c: Constraints) -> float:
    """How far a point is from meeting the constraints (1.0 = on the edge; smaller is closer)."""
    lat = p.latency_ms[c.latency_percentile]
    worst = lat / c.latency_budget_ms if lat == lat else float("inf")
    if c.min_throughput_infer_per_s > 0:
        worst = max(worst, c.min_throughput_infer_per_s / max(p.throughput_infer_per_s, 1e-9))
    if c.max_gpu_memory_mb is not None and p.gpu_memory_mb is not None:
        worst = max(worst, p.gpu_memory_mb / c.max_gpu_memory_mb)
    if p.errors:
        worst = max(worst, 1.0 + error_rate(p, m))
    if c.models:
        worst = max(worst, *budget_ratios(m, c.models).values())
    return worst


def _fmt(p: OperatingPoint, c: Constraints) -> str:
    return (f"{p.throughput_infer_per_s:.1f} infer/s at {c.latency_percentile} "
            f"{p.latency_ms[c.latency_percentile]:.2f} ms (concurrency {p.concurrency})")


def _needs(c: Constraints) -> str:
    out = f"{c.latency_percentile} <= {c.latency_budget_ms:g} ms"
    if c.min_throughput_infer_per_s:
        out += f" with >= {c.min_throughput_infer_per_s:g} infer/s"
    if c.max_gpu_memory_mb is not None:
        out += f" within {c.max_gpu_memory_mb:g} MB of GPU memory"
    if c.models:
        out += " and, each on its own requests, " + ", ".join(
            f"{sm.name} {sm.latency_percentile} <= {sm.latency_budget_ms:g} ms" for sm in c.models)
    return out


def recommend(results: RunResults, constraints: Constraints, goal: str = "max_throughput",
              load_cap: int | None = None, choose: str | None = None) -> Recommendation:
    """load_cap: the highest load the search could measure (`base.load_cap`), named when it binds;
    choose: the candidate a confirmation phase decided on (its best point is the recommendation)."""
    c = constraints
    if goal not in GOALS:
        raise ValueError(f"unknown goal {goal!r}; use one of {', '.join(GOALS)}")
    instances = {cid: r.spec.instance_count for cid, r in results.candidates.items()}
    feasible: list[OperatingPoint] = []
    everything: list[tuple[OperatingPoint, Measurement]] = []
    by_candidate: dict[str, list[tuple[OperatingPoint, Measurement]]] = {}
    for m in results.points:
        if m.status != "ok" or not m.windows:
            continue
        p = OperatingPoint.of(m, instances.get(m.candidate_id, 1))
        everything.append((p, m))
        by_candidate.setdefault(m.candidate_id, []).append((p, m))
        if meets(p, m, c):
            feasible.append(p)

    key = objective_key(goal, c.latency_percentile)

    def best_of(points: list[OperatingPoint]) -> OperatingPoint | None:
        return max(points, key=key, default=None)

    baseline = best_of([p for p in feasible if p.candidate_id == "baseline"])
    if baseline is None:  # the baseline never met the budget: show its least-bad point
        base_pts = [p for p in everything if p[0].candidate_id == "baseline"]
        baseline = min(base_pts, key=lambda pm: violation(pm[0], pm[1], c), default=(None, None))[0]

    unchecked = _unchecked(c, [p for p, _ in everything]) + _unchecked_energy(goal, [p for p, _ in everything])
    tuned = [p for p in feasible if p.candidate_id != "baseline"]
    best = _chosen(best_of, feasible, baseline, choose) or best_of(tuned) or best_of(feasible)
    if best is None:
        closest = min(everything, key=lambda pm: violation(pm[0], pm[1], c), default=(None, None))[0]
        reason = f"nothing meets the constraints: no candidate gives {_needs(c)}"
        if closest is not None:
            reason += f"; closest: {closest.candidate_id} at {_fmt(closest, c)}"
        if unchecked:
            reason += "; not checked: " + "; ".join(unchecked)
        return Recommendation(None, None, baseline, closest, c, "none", reason, feasible, goal, unchecked)

    others = [p for p in feasible if p.candidate_id not in (best.candidate_id,)]
    runner_up = best_of([p for p in others if p.candidate_id != "baseline"]) or best_of(others)
    binding = _binding(by_candidate.get(best.candidate_id, []), best, c, goal, load_cap)
    reason = f"{best.candidate_id} gives {_fmt(best, c)}"
    if goal == "max_throughput_per_instance":
        reason += f" = {best.throughput_per_instance:.1f} infer/s per instance ({best.instance_count})"
    if goal == "min_energy" and best.energy_j_per_infer is not None:
        reason += f" using {best.energy_j_per_infer:.4g} J per inference"
    if baseline is not None and best.candidate_id != "baseline":
        reason += f" vs baseline {_fmt(baseline, c)}"
    if runner_up is not None:
        reason += f"; runner-up {runner_up.candidate_id}: {_fmt(runner_up, c)}"
    reason += f"; binding: {binding}"
    if unchecked:
        reason += "; not checked: " + "; ".join(unchecked)
    return Recommendation(best, runner_up, baseline, None, c, binding, reason, feasible, goal, unchecked)


def _chosen(best_of, feasible: list[OperatingPoint], baseline: OperatingPoint | None,
            choose: str | None) -> OperatingPoint | None:
    """The best point of the candidate a confirmation phase chose; the current config is kept
    even where the search saw it only over the budget."""
    if choose is None:
        return None
    return best_of([p for p in feasible if p.candidate_id == choose]) or (baseline if choose == "baseline" else None)


def _unchecked(c: Constraints, points: list[OperatingPoint]) -> list[str]:
    if c.max_gpu_memory_mb is None:
        return []
    missing = [p for p in points if p.gpu_memory_mb is None]
    if not missing:
        return []
    if len(missing) == len(points):
        return [f"max_gpu_memory_mb {c.max_gpu_memory_mb:g}: not available (no GPU memory telemetry "
                "in the results; the server exposes no nv_gpu_memory_used_bytes)"]
    return [f"max_gpu_memory_mb {c.max_gpu_memory_mb:g}: not available for {len(missing)} of "
            f"{len(points)} load points (no GPU memory telemetry in their windows)"]


def _unchecked_energy(goal: str, points: list[OperatingPoint]) -> list[str]:
    if goal != "min_energy" or not points:
        return []
    missing = [p for p in points if p.energy_j_per_infer is None]
    if len(missing) == len(points):
        return ["objective min_energy: not available (no GPU energy telemetry in the results; the server "
                "exposes no nv_energy_consumption that advanced): recommended by max throughput instead"]
    if missing:
        return [f"objective min_energy: energy per inference not available for {len(missing)} of "
                f"{len(points)} load points; those rank below every point with a figure"]
    return []


SATURATED = 0.9  # instances computing this share of the time: the server is the limit
# The best point's percentile this close under the budget: near the budget latency grows about in
# proportion to the load, so no higher load that meets the budget can serve much more; the budget binds
NEAR_BUDGET = 0.05


def busy_share(m: Measurement, instances: int) -> float | None:
    """The share of the point's time its instances spent computing (server statistics)."""
    used = m.windows[-m.summary_windows:] if m.summary_windows > 0 else m.windows
    span_s = sum(w.duration_s for w in used)
    ns = sum(t for w in used if w.server is not None for _, t in w.server.batch_compute_infer.values())
    if span_s <= 0 or not ns:
        return None
    return ns / 1e9 / (span_s * max(1, instances))


def _saturation(points: list[tuple[OperatingPoint, Measurement]], best: OperatingPoint, plateau: float) -> str | None:
    """The best point is where throughput stopped growing: lower loads gave as much, or its
    instances computed nearly all the time."""
    lower = [p for p, _ in points if p.concurrency <= best.concurrency / 1.25]
    prev = max(lower, key=lambda p: p.throughput_infer_per_s, default=None)
    if prev is not None and best.throughput_infer_per_s < prev.throughput_infer_per_s * (1 + plateau):
        return (f"throughput plateau (server saturated: {prev.throughput_infer_per_s:.1f} infer/s already at "
                f"concurrency {prev.concurrency})")
    m = next((m for p, m in points if p is best), None)
    share = busy_share(m, best.instance_count) if m is not None else None
    if share is not None and share >= SATURATED:
        return f"server saturated (its instances computed {min(share, 1.0):.0%} of the time)"
    return None


def _binding(points: list[tuple[OperatingPoint, Measurement]], best: OperatingPoint, c: Constraints,
             goal: str = "max_throughput", load_cap: int | None = None) -> str:
    """Why the best candidate was not run harder (or, for min_latency, lighter): the constraint that held it."""
    if goal == "min_latency":
        lower = sorted((pm for pm in points if pm[0].concurrency < best.concurrency),
                       key=lambda pm: -pm[0].concurrency)
        for p, _ in lower:
            if p.throughput_infer_per_s < c.min_throughput_infer_per_s:
                return (f"minimum throughput ({p.throughput_infer_per_s:.1f} infer/s < "
                        f"{c.min_throughput_infer_per_s:g} at concurrency {p.concurrency})")
        return "lowest load level measured"
    higher = sorted((pm for pm in points if pm[0].concurrency > best.concurrency), key=lambda pm: pm[0].concurrency)
    for p, m in higher:
        lat = p.latency_ms[c.latency_percentile]
        if lat != lat or lat > c.latency_budget_ms:
            return f"latency budget ({c.latency_percentile} {lat:.2f} ms > {c.latency_budget_ms:g} ms at concurrency {p.concurrency})"
        if (c.max_gpu_memory_mb is not None and p.gpu_memory_mb is not None
                and p.gpu_memory_mb > c.max_gpu_memory_mb):
            return (f"GPU memory ({p.gpu_memory_mb:.0f} MB > {c.max_gpu_memory_mb:g} MB at concurrency "
                    f"{p.concurrency})")
        if m.status != "ok" or (p.errors and error_rate(p, m) > c.max_error_rate):
            return f"errors at concurrency {p.concurrency}"
        if goal == "min_energy" and None not in (p.energy_j_per_infer, best.energy_j_per_infer) \
                and p.energy_j_per_infer >= best.energy_j_per_infer:
            return (f"energy per inference stops falling ({p.energy_j_per_infer:.4g} J at concurrency "
                    f"{p.concurrency})")
        if p.throughput_infer_per_s <= best.throughput_infer_per_s:
            return f"throughput plateau (server saturated: {p.throughput_infer_per_s:.1f} infer/s at concurrency {p.concurrency})"
    why = _saturation(points, best, 0.03)
    if why is not None:
        return why
    lat = best.latency_ms[c.latency_percentile]
    if lat == lat and lat >= (1 - NEAR_BUDGET) * c.latency_budget_ms:
        return (f"latency budget ({c.latency_percentile} {lat:.2f} ms at concurrency {best.concurrency} is within "
                f"{NEAR_BUDGET:.0%} of {c.latency_budget_ms:g} ms)")
    if load_cap is not None and best.concurrency >= load_cap:
        return f"load cap (concurrency {load_cap}, the most the search measures) still within the budget"
    return ("highest load level measured" + (f" (below the load cap {load_cap}: the search stopped before the "
                                             f"budget bound)" if load_cap is not None else ""))
