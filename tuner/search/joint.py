"""The joint search: several models tuned together (an ensemble's steps, a BLS model's callees).

Every candidate is one setting of all the tuned models (`config.JointSpec`), measured end to
end through the model the load is sent to, so the latency budget is the whole request's. The
cross product of the models' spaces grows too fast to measure, so the search is coordinate
descent led by the server's statistics:

1. The baseline (every model as it is) climbs the listed load levels as grid does.
2. From the incumbent's best point (the best feasible one, else its highest load), each
   model's time per request on the server (queue + compute, from the statistics API of that
   model, `WindowSample.steps`) says which model limits: the one with the most time.
3. That model's listed settings are measured, every other model held at the incumbent's
   setting; the best (by the objective, and by more than `plateau_pct` over the incumbent,
   so noise does not move it) becomes the incumbent.
4. Then the next model, ranked again on the new incumbent's statistics. A model whose time
   is below FOCUS_SHARE of the limiting model's is not where time goes: its settings are
   skipped, with the times in the reason.
5. A pass ends when every model was tuned or skipped; another pass follows while the last
   one moved the incumbent, up to MAX_PASSES. Settings measured before are not measured
   again (their points are reused).

Each candidate climbs the listed load levels until the budget breaks, throughput stops
growing by plateau_pct, it fails, or the list ends (`base.climb_stop_reason`). Pure and
deterministic in the observations, so a resumed sweep replays it with the stored points.
"""

from __future__ import annotations

from tuner.config import CandidateSpec, JointSpec
from tuner.results.records import Measurement
from tuner.results.stats import merge_server
from tuner.search.base import BASELINE, Step, Strategy
from tuner.search.recommend import OperatingPoint, meets, objective_key

FOCUS_SHARE = 0.25  # a model under this share of the limiting model's time per request is not tuned
MAX_PASSES = 2


def step_breakdown_ms(m: Measurement) -> dict[str, dict[str, float]]:
    """Each step model's server time per request over the point's summary windows, in ms:
    {"queue": ..., "compute": ...} (compute: input + infer + output), from the statistics API."""
    used = [w for w in m.windows if not w.failed][-m.summary_windows:]
    names = sorted({name for w in used for name in (w.steps or {})})
    out: dict[str, dict[str, float]] = {}
    for name in names:
        d = merge_server([(w.steps or {}).get(name) for w in used])
        if d is not None and d.success_count > 0:
            compute_ns = d.compute_input_ns + d.compute_infer_ns + d.compute_output_ns
            out[name] = {"queue": d.queue_ns / d.success_count / 1e6, "compute": compute_ns / d.success_count / 1e6}
    return out


def step_times_ms(m: Measurement) -> dict[str, float]:
    """Each step model's server time per request (queue + compute, ms): what ranks the steps."""
    return {name: b["queue"] + b["compute"] for name, b in step_breakdown_ms(m).items()}


class JointStrategy(Strategy):
    """Coordinate descent over the tuned models, the limiting one first; see the module docstring."""

    name = "joint"

    def __init__(self, profile, models: list[str], originals: dict[str, CandidateSpec],
                 options: dict[str, list[CandidateSpec]]):
        self.models = list(models)
        self.originals = dict(originals)
        self.options = {m: list(options.get(m, [])) for m in self.models}
        listed = [(BASELINE, JointSpec())] + [
            (s.candidate_id, s) for m in self.models
            for s in (JointSpec().with_step(m, o, self.originals[m], self.models) for o in self.options[m])
            if s.steps]
        super().__init__(profile, listed)
        self.c = profile.constraints
        self.key = objective_key(profile.goal, self.c.latency_percentile)
        self.current: tuple[str, JointSpec] = (BASELINE, JointSpec())
        self.pass_no = 1
        self.moved = False  # the incumbent changed in this pass
        self.done_models: set[str] = set()  # tuned or skipped in this pass
        self.tuning: str | None = None
        self.pending: list[tuple[str, JointSpec]] = []
        self.skips: list[Step] = []
        self.notes: list[str] = []  # how the search went, in words (the sweep prints them)

    focus_share = FOCUS_SHARE  # a model scoring under this share of the top score is skipped

    def limit_scores(self, focus: Measurement) -> dict[str, float]:
        """How much each model limits at the focus point (higher: tuned first): its server time per request."""
        return step_times_ms(focus)

    def _best(self, cid: str) -> OperatingPoint | None:
        """The candidate's best point meeting every constraint, or None."""
        feasible = []
        for m in self.points.get(cid, []):
            if m.status == "ok" and m.windows:
                op = OperatingPoint.of(m)
                if meets(op, m, self.c):
                    feasible.append(op)
        return max(feasible, key=self.key, default=None)

    def _clearly_better(self, new: OperatingPoint, old: OperatingPoint | None) -> bool:
        """`new` beats `old`, and for max throughput by more than plateau_pct (noise does not move the search)."""
        if old is None:
            return True
        if self.key(new) <= self.key(old):
            return False
        if self.profile.goal != "max_throughput":
            return True
        return new.throughput_infer_per_s >= old.throughput_infer_per_s * (1 + self.profile.search.plateau_pct / 100)

    def _focus_point(self, cid: str) -> Measurement | None:
        """The point whose statistics rank the models: the best feasible one, else the highest load."""
        ok = [m for m in self.points.get(cid, []) if m.status == "ok" and m.windows]
        best = self._best(cid)
        if best is not None:
            return next(m for m in ok if m.concurrency == best.concurrency)
        return max(ok, key=lambda m: m.concurrency, default=None)

    # -- the descent
    def next_step(self) -> Step | None:
        if self.skips:
            return self.skips.pop(0)
        step = self._climb(*self.current) if self.current[0] == BASELINE else None
        if step is not None:
            return step
        while True:
            for cid, spec in self.pending:
                step = self._climb(cid, spec)
                if step is not None:
                    return step
            if self.pending:
                self._conclude()
            if not self._next_model():
                return None
            if self.skips:
                return self.skips.pop(0)

    def _conclude(self) -> None:
        """The tuned model's settings are measured: the best becomes the incumbent if it beats it clearly."""
        have = self._best(self.current[0])
        best_cid, best_op = None, None
        for cid, _spec in self.pending:
            op = self._best(cid)
            if op is not None and (best_op is None or self.key(op) > self.key(best_op)):
                best_cid, best_op = cid, op
        if best_op is not None and best_cid != self.current[0] and self._clearly_better(best_op, have):
            self.current = (best_cid, dict(self.pending)[best_cid])
            self.moved = True
            self.notes.append(f"pass {self.pass_no}: {self.tuning} -> {best_cid}")
        self.done_models.add(self.tuning)
        self.tuning, self.pending = None, []

    def _next_model(self) -> bool:
        """Pick the next model to tune (queueing skips for those that do not limit); False: the search is over."""
        left = [m for m in self.models if m not in self.done_models]
        if not left:
            if not self.moved or self.pass_no >= MAX_PASSES:
                return False
            self.pass_no += 1
            self.moved = False
            self.done_models = set()
            left = list(self.models)
        focus = self._focus_point(self.current[0])
        times = self.limit_scores(focus) if focus is not None else {}
        # the limiting model first; models without statistics keep their order, after those with
        ranked = sorted(left, key=lambda m: (-times.get(m, -1.0), self.models.index(m)))
        model = ranked[0]
        top = max(times.values(), default=0.0)
        if times and model in times and top > 0 and times[model] < self.focus_share * top:
            limiting = max(times, key=times.get)
            for m in ranked:
                self._skip_model(m, f"{m} is not where time goes: {times.get(m, 0.0):.2f} ms per request on the "
                                    f"server vs {top:.2f} ms at {limiting} (the incumbent's statistics)")
            return True
        self.tuning = model
        _cid, spec = self.current
        pending = []
        for option in self.options[model]:
            joint = spec.with_step(model, option, self.originals[model], self.models)
            cid = joint.candidate_id if joint.steps else BASELINE  # every model as it is: the baseline
            if cid != self.current[0] and cid not in dict(pending):
                pending.append((cid, joint))
        self.pending = pending
        if not pending:
            self.done_models.add(model)
            self.tuning = None
        return True

    def _skip_model(self, model: str, reason: str) -> None:
        self.done_models.add(model)
        _cid, spec = self.current
        for option in self.options[model]:
            joint = spec.with_step(model, option, self.originals[model], self.models)
            cid = joint.candidate_id
            if joint.steps and cid not in self.ended and not self.points.get(cid):
                self.ended.add(cid)
                self.skips.append(Step("skip", cid, joint, reason=reason))
