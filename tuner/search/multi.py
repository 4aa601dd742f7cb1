"""The search for several models sharing one server (`[[model]]`, profile_multi.py).

Every model is under load at once, each with its share of the requests, so a candidate is a
joint setting of all of them (`config.JointSpec`) and the search is the joint one
(`search/joint.py`: coordinate descent from the baseline, each model's listed settings
measured with the others held at the incumbent's). What differs:

- feasible: every model within its own budget, on its own requests (`Constraints.models`,
  checked by `recommend.meets` wherever a point is judged); the objective is the total
  throughput, at the shares (the load sends each model its share);
- the model tuned first is the one that limits: the highest latency over its budget at the
  incumbent's focus point (its best feasible point, else its highest load); then its compute
  time per request on the server (the model with the most compute per request when the
  budgets are far away). No model is skipped: on a shared device every model's batching
  changes every other model's latency;
- a candidate stops climbing as soon as any model breaks its budget.
"""

from __future__ import annotations

from tuner.results.records import Measurement
from tuner.search.base import Step
from tuner.search.budgets import budget_ratios
from tuner.search.joint import JointStrategy, step_times_ms


class MultiStrategy(JointStrategy):
    """Coordinate descent over models sharing the server, the one nearest its budget first."""

    name = "multi"
    focus_share = 0.0  # never skip a model

    def limit_scores(self, focus: Measurement) -> dict[str, float]:
        ratios = budget_ratios(focus, self.c.models)
        compute = step_times_ms(focus)
        top = max(compute.values(), default=0.0) or 1.0
        # the budget ratio decides; compute per request (scaled under 1 ms-ish) only breaks near-ties
        return {m: min(ratios.get(m, 0.0), 1e6) + 0.01 * compute.get(m, 0.0) / top for m in self.models}

    def _climb(self, cid, spec) -> Step | None:
        pts = self.points.get(cid, [])
        if cid not in self.ended and cid not in self.failed and pts and pts[-1].status == "ok" and pts[-1].windows:
            over = {m: r for m, r in budget_ratios(pts[-1], self.c.models).items() if r > 1.0}
            if over:
                return self._end(cid, "budget")
        return super()._climb(cid, spec)
