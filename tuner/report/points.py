"""The measured load points as the report sees them: each with its summary and
whether it meets the constraints, grouped per candidate (baseline first).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.report.text import finite_or_none
from tuner.results.stats import PointSummary
from tuner.results.records import Measurement
from tuner.results.store import RunResults
from tuner.search.recommend import Recommendation

BASELINE = "baseline"


@dataclass(frozen=True)
class Pt:
    """One measured load point with its summary and whether it meets the constraints."""

    m: Measurement
    s: PointSummary
    feasible: bool

    @property
    def cid(self) -> str:
        return self.m.candidate_id

    def lat(self, pct: str) -> float | None:
        return finite_or_none(self.s.latency_ms.get(pct))


def measured_points(results: RunResults, rec: Recommendation) -> dict[str, list[Pt]]:
    """ok points with samples, per candidate, ordered by concurrency; baseline first.

    Feasibility is the recommender's (`rec.feasible`), so the page and the
    recommendation can never disagree.
    """
    feasible = {(p.candidate_id, p.concurrency) for p in rec.feasible}
    out: dict[str, list[Pt]] = {}
    for cid in candidate_ids(results):
        pts = [Pt(m, m.summary(), (cid, m.concurrency) in feasible)
               for m in results.points_of(cid) if m.status == "ok" and m.windows]
        if pts:
            out[cid] = pts
    return out


def candidate_ids(results: RunResults) -> list[str]:
    ids = list(results.candidates) + [p.candidate_id for p in results.points]
    ids = list(dict.fromkeys(ids))
    return sorted(ids, key=lambda i: i != BASELINE)  # stable: baseline first, then run order


def best_feasible(pts: list[Pt], pct: str) -> Pt | None:
    ok = [p for p in pts if p.feasible]
    return max(ok, key=lambda p: (p.s.throughput_infer_per_s, -(p.lat(pct) or 0.0)), default=None)


def pareto_frontier(pts: list[Pt], pct: str) -> list[Pt]:
    """Points no other point beats on both throughput (higher) and latency (lower)."""
    ordered = sorted((p for p in pts if p.lat(pct) is not None),
                     key=lambda p: (p.lat(pct), -p.s.throughput_infer_per_s))
    front: list[Pt] = []
    for p in ordered:
        if not front or p.s.throughput_infer_per_s > front[-1].s.throughput_infer_per_s:
            front.append(p)
    return front
