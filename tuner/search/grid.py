"""The reference search: every candidate, each climbed through the listed load levels.

Each candidate starts at the lowest listed concurrency and steps up the list in order
until its throughput stops growing by more than plateau_pct, its latency breaks the
budget, it fails, or the list runs out (`climb_stop_reason`). Nothing is skipped, so its
answer is the best the listed levels can show, at the price of measuring everything. It
stays on the listed levels (it is the reference for what a list shows); the smart search
follows a budget that has not bound beyond them, up to the load cap.
"""

from __future__ import annotations

from tuner.search.base import Step, Strategy


class GridStrategy(Strategy):
    """Every candidate, each climbed through the load levels in order until
    throughput stops growing or the latency budget breaks (the reference)."""

    name = "grid"

    def next_step(self) -> Step | None:
        for cid, spec in self.candidates:
            step = self._climb(cid, spec)
            if step is not None:
                return step
        return None
