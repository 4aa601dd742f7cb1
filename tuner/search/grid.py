"""The reference search: every candidate, each climbed through the listed load levels.

Each candidate starts at the lowest listed concurrency and steps up the list in order
until its throughput stops growing by more than plateau_pct, its latency breaks the
budget or it fails (`climb_stop_reason`). When the list runs out first, the climb goes on
by doubling up to the load cap (`base.load_cap`: LOAD_CAP x the highest listed level), so
a budget that had not bound yet is followed. Nothing is skipped, so its answer is the
best those levels can show, at the price of measuring everything.
"""

from __future__ import annotations

from tuner.search.base import Step, Strategy, climb_stop_reason, load_cap


class GridStrategy(Strategy):
    """Every candidate, each climbed through the load levels in order until
    throughput stops growing or the latency budget breaks (the reference)."""

    name = "grid"

    def levels(self) -> list[int]:
        """The listed levels, then doubling beyond the highest up to the load cap."""
        listed = sorted(self.profile.search.concurrency)
        out, cap = list(listed), load_cap(listed)
        while out[-1] < cap:
            out.append(min(cap, out[-1] * 2))
        return out

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
            todo = [level for level in self.levels() if level not in done]
            if not todo:
                return self._end(cid, "max_load: the load cap meets the budget")
            return Step("measure", cid, spec, todo[0])
        return None
