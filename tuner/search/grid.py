"""The reference search: every candidate, each climbed through the listed load levels.

Each candidate starts at the lowest listed concurrency and steps up the list in order
until its throughput stops growing by more than plateau_pct, its latency breaks the
budget, it fails, or the list runs out (`climb_stop_reason`). Nothing is skipped, so its
answer is the best the listed levels can show, at the price of measuring everything. It
stays on the listed levels (it is the reference for what a list shows); the smart search
follows a budget that has not bound beyond them, up to the load cap.
"""

from __future__ import annotations

from tuner.search.base import Step, Strategy, climb_stop_reason


class GridStrategy(Strategy):
    """Every candidate, each climbed through the load levels in order until
    throughput stops growing or the latency budget breaks (the reference)."""

    name = "grid"

    def next_step(self) -> Step | None:
        p = self.profile
        c = p.constraints
        for cid, spec in self.candidates:
            if cid in self.ended:
                continue
            if cid in self.failed:
                return self._end(cid, "failed")
            pts = self.points[cid]
            if pts:
                reason = climb_stop_reason(pts, c.latency_percentile, c.latency_budget_ms, p.search.plateau_pct)
                if reason is not None:
                    return self._end(cid, reason)
            done = {m.concurrency for m in pts}
            todo = [level for level in p.search.concurrency if level not in done]
            if not todo:
                return self._end(cid, "max_load")
            return Step("measure", cid, spec, todo[0])
        return None
