"""Pick the best measured (candidate, load level) under the constraints.

Pure: stored results + constraints in, a `Recommendation` out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from .results import Measurement, RunResults

LATENCY_KEYS = ("p50", "p90", "p95", "p99")


@dataclass(frozen=True)
class Constraints:
    latency_percentile: str = "p99"
    latency_budget_ms: float = 50.0
    min_throughput_infer_per_s: float = 0.0
    max_gpu_memory_mb: float | None = None
    max_error_rate: float = 0.0  # fraction of requests allowed to fail

    def to_dict(self) -> dict:
        return asdict(self)


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

    @classmethod
    def of(cls, m: Measurement) -> "OperatingPoint":
        s = m.summary()
        return cls(
            candidate_id=m.candidate_id,
            concurrency=m.concurrency,
            throughput_infer_per_s=s.throughput_infer_per_s,
            latency_ms={k: s.latency_ms[k] for k in LATENCY_KEYS},
            errors=s.errors,
            stable=m.stable,
            server_ms=s.server_ms,
        )

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

    def to_dict(self) -> dict:
        return {
            "best": self.best.to_dict() if self.best else None,
            "runner_up": self.runner_up.to_dict() if self.runner_up else None,
            "baseline": self.baseline.to_dict() if self.baseline else None,
            "closest": self.closest.to_dict() if self.closest else None,
            "constraints": self.constraints.to_dict(),
            "binding": self.binding,
            "reason": self.reason,
        }


def meets(p: OperatingPoint, m: Measurement, c: Constraints) -> bool:
    if m.status != "ok":
        return False
    total = m.summary().completed + p.errors
    if total == 0:
        return False
    if p.errors / total > c.max_error_rate:
        return False
    lat = p.latency_ms[c.latency_percentile]
    return lat == lat and lat <= c.latency_budget_ms and p.throughput_infer_per_s >= c.min_throughput_infer_per_s


def _fmt(p: OperatingPoint, c: Constraints) -> str:
    return (f"{p.throughput_infer_per_s:.1f} infer/s at {c.latency_percentile} "
            f"{p.latency_ms[c.latency_percentile]:.2f} ms (concurrency {p.concurrency})")


def recommend(results: RunResults, constraints: Constraints) -> Recommendation:
    c = constraints
    feasible: list[OperatingPoint] = []
    everything: list[OperatingPoint] = []
    by_candidate: dict[str, list[tuple[OperatingPoint, Measurement]]] = {}
    for m in results.points:
        if m.status != "ok" or not m.windows:
            continue
        p = OperatingPoint.of(m)
        everything.append(p)
        by_candidate.setdefault(m.candidate_id, []).append((p, m))
        if meets(p, m, c):
            feasible.append(p)

    def best_of(points: list[OperatingPoint]) -> OperatingPoint | None:
        return max(points, key=lambda p: (p.throughput_infer_per_s, -p.latency_ms[c.latency_percentile]),
                   default=None)

    baseline = best_of([p for p in feasible if p.candidate_id == "baseline"])
    if baseline is None:  # the baseline never met the budget: show its least-bad point
        base_pts = [p for p in everything if p.candidate_id == "baseline"]
        baseline = min(base_pts, key=lambda p: p.latency_ms[c.latency_percentile], default=None)

    tuned = [p for p in feasible if p.candidate_id != "baseline"]
    best = best_of(tuned) or best_of(feasible)
    if best is None:
        closest = min(everything, key=lambda p: p.latency_ms[c.latency_percentile] / c.latency_budget_ms,
                      default=None)
        reason = (f"no candidate meets {c.latency_percentile} <= {c.latency_budget_ms:g} ms"
                  + (f" with >= {c.min_throughput_infer_per_s:g} infer/s" if c.min_throughput_infer_per_s else ""))
        if closest is not None:
            reason += f"; closest: {closest.candidate_id} at {_fmt(closest, c)}"
        return Recommendation(None, None, baseline, closest, c, "none", reason, feasible)

    others = [p for p in feasible if p.candidate_id not in (best.candidate_id,)]
    runner_up = best_of([p for p in others if p.candidate_id != "baseline"]) or best_of(others)
    binding = _binding(by_candidate.get(best.candidate_id, []), best, c)
    reason = f"{best.candidate_id} gives {_fmt(best, c)}"
    if baseline is not None and best.candidate_id != "baseline":
        reason += f" vs baseline {_fmt(baseline, c)}"
    if runner_up is not None:
        reason += f"; runner-up {runner_up.candidate_id}: {_fmt(runner_up, c)}"
    reason += f"; binding: {binding}"
    return Recommendation(best, runner_up, baseline, None, c, binding, reason, feasible)


def _binding(points: list[tuple[OperatingPoint, Measurement]], best: OperatingPoint, c: Constraints) -> str:
    """Why the best candidate was not run harder: the constraint that held it."""
    higher = sorted((pm for pm in points if pm[0].concurrency > best.concurrency), key=lambda pm: pm[0].concurrency)
    for p, m in higher:
        lat = p.latency_ms[c.latency_percentile]
        if lat > c.latency_budget_ms:
            return f"latency budget ({c.latency_percentile} {lat:.2f} ms > {c.latency_budget_ms:g} ms at concurrency {p.concurrency})"
        if p.throughput_infer_per_s <= best.throughput_infer_per_s:
            return f"throughput plateau (server saturated: {p.throughput_infer_per_s:.1f} infer/s at concurrency {p.concurrency})"
        if m.status != "ok" or p.errors:
            return f"errors at concurrency {p.concurrency}"
    return "highest load level measured"
