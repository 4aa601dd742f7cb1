"""What every search strategy shares: the steps it answers and the bookkeeping of what it saw.

A strategy is pure: it sees every measurement the sweep made (`observe`) and answers the
next step (`next_step`); the sweep does the I/O. Because the answers depend only on what
was observed, a resumed sweep that feeds stored points back replays the same path and
measures only what is missing.

Steps:
    Step("measure", cid, spec, concurrency)   measure this candidate at this load
    Step("end", cid, reason=...)              the candidate is done (budget, plateau, ...)
    Step("skip", cid, spec, reason=...)       not measured at all, with the reason

A step's spec need not be one the profile listed: a strategy may create candidates (smart
search refines max_batch_size); the sweep applies and records whatever spec a step carries,
under its usual `CandidateSpec.candidate_id`, so a resumed sweep finds them again.

The load cap (`load_cap`): smart search follows a budget that has not bound at the
profile's highest level up to LOAD_CAP times it, so "the highest level measured" is never
why it stopped unless the cap itself was reached (grid stays on the listed levels).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.config import CandidateSpec
from tuner.results.records import Measurement

BASELINE = "baseline"
LOAD_CAP = 4  # the load may go this many times beyond the profile's highest level while the budget holds
MAX_CONCURRENCY = 4096


def load_cap(levels) -> int:
    """The highest load a search may measure: LOAD_CAP x the profile's highest level."""
    top = max(levels)
    return max(top, min(MAX_CONCURRENCY, LOAD_CAP * top))


@dataclass(frozen=True)
class Step:
    kind: str  # "measure" | "end" | "skip"
    candidate_id: str
    spec: CandidateSpec | None = None
    concurrency: int = 0
    reason: str = ""


def climb_stop_reason(points: list[Measurement], percentile: str, budget_ms: float,
                      plateau_pct: float) -> str | None:
    """Why a candidate stops climbing after its last point (None: go on)."""
    last = points[-1]
    if last.status != "ok":
        return "failed"
    s = last.summary()
    if s.errors and s.completed == 0:
        return "failed"
    latency_ms = s.latency_ms[percentile]
    if latency_ms != latency_ms or latency_ms > budget_ms:  # NaN: nothing completed in time to measure
        return "budget"
    if len(points) >= 2:
        best_before = max(p.summary().throughput_infer_per_s for p in points[:-1])
        if s.throughput_infer_per_s < best_before * (1 + plateau_pct / 100.0):
            return "plateau"
    return None


class Strategy:
    """Base: bookkeeping of what was observed."""

    name = "base"

    def __init__(self, profile, candidates: list[tuple[str, CandidateSpec]]):
        self.profile = profile
        self.candidates = candidates  # (candidate_id, spec), the baseline first
        self.points: dict[str, list[Measurement]] = {cid: [] for cid, _ in candidates}
        self.failed: dict[str, str] = {}
        self.ended: set[str] = set()

    def observe(self, m: Measurement) -> None:
        self.points.setdefault(m.candidate_id, []).append(m)

    def observe_failed(self, candidate_id: str, reason: str) -> None:
        self.failed[candidate_id] = reason

    def next_step(self) -> Step | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _end(self, cid: str, reason: str) -> Step:
        self.ended.add(cid)
        return Step("end", cid, reason=reason)

    def _climb(self, cid: str, spec) -> Step | None:
        """The candidate's next listed load level (grid's rule, `climb_stop_reason`), or its end;
        None once it has ended."""
        if cid in self.ended:
            return None
        if cid in self.failed:
            return self._end(cid, "failed")
        p = self.profile
        c = p.constraints
        pts = self.points.get(cid, [])
        if pts:
            reason = climb_stop_reason(pts, c.latency_percentile, c.latency_budget_ms, p.search.plateau_pct)
            if reason is not None:
                return self._end(cid, reason)
        done = {m.concurrency for m in pts}
        todo = [level for level in p.search.concurrency if level not in done]
        if not todo:
            return self._end(cid, "max_load")
        return Step("measure", cid, spec, todo[0])
