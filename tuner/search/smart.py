"""The smart search: grid's answer (or better) with a fraction of its measurements.

1. The baseline, then the candidate with the largest max_batch_size at the fewest
   instances (its middle queue delay): it shows the most batch sizes, unshared, so the
   server's statistics give a cost per batch size early.
2. From then on every open candidate is predicted before it is measured (`model.py`: the
   server's compute per batch size, the time outside the server, a simulation of the
   dynamic batcher, calibrated against every measured point). The one with the best
   prediction is measured next. Each candidate, whatever its max_batch_size, queue delay,
   preferred sizes or instance count, is judged on its own prediction: a candidate is
   skipped only when its compute ceiling (`ceiling.py`) or its prediction, raised by the
   model's margin, cannot beat the incumbent (the best point meeting every constraint so
   far); the reason is listed.
3. A candidate's load level at the budget is bracketed (`bracket.LoadSearch`), starting
   where the model predicts it, over any integer from the profile's lowest level up to the
   load cap (LOAD_CAP x its highest level): a budget that has not bound at the last listed
   level is followed beyond it. After each point the model, re-anchored on the candidate's
   own points, may show that it cannot beat the incumbent: it stops there.
4. When everything listed is done, max_batch_size is refined (`refine.py`): between the
   incumbent's listed neighbours, and beyond the largest listed value when the incumbent
   is the largest, a value the model predicts better than the incumbent is added at the
   incumbent's settings, measured first, and at the settings that won at the tried values
   next to it (judged like any candidate); refining
   stops once a refined candidate does not become the incumbent (the model's suggestion
   failed: it is no guide there) or after MAX_REFINED.
5. The winner's load at the budget is bracketed more finely (POLISH_TOL, at most
   POLISH_POINTS more points), then it gets points at lower load (CURVE_SHARES of its best
   throughput) so `tuner plan` can interpolate its latency curve.

min_latency looks for the lowest load reaching the required throughput instead.
Deterministic: every decision is a function of the observations in order, so a resumed
sweep replays it with the stored points (refined candidates included: their specs are in
the steps, and their ids are the usual `CandidateSpec.candidate_id`).
"""

from __future__ import annotations

import math

from tuner.config import CandidateSpec, expand_specs
from tuner.results.records import Measurement
from tuner.search.base import BASELINE, Step, Strategy, load_cap
from tuner.search.bracket import Level, LoadPoint, LoadSearch, read_point
from tuner.search.ceiling import Bound, throughput_bound
from tuner.search.confirm import TIE_MARGIN
from tuner.search.judge import cannot_beat_any, hopeless, tail_ratio
from tuner.search.model import BatchModel, Prediction
from tuner.search.recommend import OperatingPoint, objective_key, objective_value
from tuner.search.refine import neighbour_settings, propose


class SmartStrategy(Strategy):
    """Predict, measure the most promising, skip what cannot win, refine; see the module docstring."""

    name = "smart"
    SKIP_MARGIN = 0.05   # a ceiling must beat the incumbent by this much to be skipped
    GAIN_TOL = 0.03      # stop bisecting when at most this much throughput is left between the brackets
    MAX_POINTS = 4       # per candidate: beyond, a noisy host makes bracketing chase its own noise
    MAX_STEP = 4.0       # the most the load changes in one extrapolated step
    MAX_REFINED = 4      # new max_batch_size values tried
    # of the winner's best throughput: capacity plans run replicas below it, and interpolate between
    # this point, the at-budget one and the bracketing points below it (a second share cost 4-10%
    # of a smart sweep's points on the bench's surfaces)
    CURVE_SHARES = (0.5,)
    # the winner's brackets are closed to this much throughput: the confirmation ties configs this
    # close, so a closer bracket changes no answer; this polishes a winner whose own search stopped
    # wider (MAX_POINTS, a stop on the model)
    POLISH_TOL = TIE_MARGIN
    POLISH_POINTS = 1    # one point: a second would chase the host's few-percent noise

    def __init__(self, profile, candidates: list[tuple[str, CandidateSpec]]):
        super().__init__(profile, candidates)
        self.c = profile.constraints
        self.goal = getattr(profile, "goal", "max_throughput")
        levels = profile.search.concurrency
        self.cmin, self.cap = min(levels), load_cap(levels)
        self.load = LoadSearch(self.c, self.cmin, self.cap, profile.search.plateau_pct, self.GAIN_TOL,
                               self.MAX_STEP, cap_note=f"the load cap, {self.cap // max(levels)}x the "
                                                   f"profile's highest level")
        self.specs = dict(candidates)
        self.order = [cid for cid, _ in candidates]
        self.listed_mbs = sorted({s.max_batch_size for cid, s in candidates if cid != BASELINE})
        self.refined: list[set[str]] = []  # candidates added by refining max_batch_size, one set per value
        self.current: str | None = None
        self.guess: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self.curve_asked: dict[str, int] = {}
        self.polished: dict[str, int] = {}  # winner -> points asked to close its brackets
        self.finishing = False  # polishing / curve points started: the candidates are settled
        self.fine = LoadSearch(self.c, self.cmin, self.cap, profile.search.plateau_pct, self.POLISH_TOL,
                               self.MAX_STEP, cap_note=self.load.cap_note)
        self._cache: dict[int, tuple[Measurement, LoadPoint]] = {}
        self._model: tuple[int, BatchModel] | None = None
        self._seen = 0  # observations so far (keys the model)

    def observe(self, m: Measurement) -> None:
        super().observe(m)
        self._seen += 1

    # -- bookkeeping --
    def _pt(self, m: Measurement) -> LoadPoint:
        hit = self._cache.get(id(m))
        if hit is not None and hit[0] is m:  # the id of a collected measurement can be reused
            return hit[1]
        spec = self.specs.get(m.candidate_id)
        full = spec.max_batch_size if spec is not None and spec.dynamic_batching else 0
        pt = read_point(m, spec.instance_count if spec else 1, self.c, full)
        self._cache[id(m)] = (m, pt)
        return pt

    def _pts(self, cid: str) -> list[LoadPoint]:
        return sorted((self._pt(m) for m in self.points.get(cid, [])), key=lambda p: p.concurrency)

    def _value(self, op: OperatingPoint) -> float:
        return objective_value(self.goal, op, self.c.latency_percentile)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.goal == "min_latency" else a > b

    def _incumbent(self) -> OperatingPoint | None:
        key = objective_key(self.goal, self.c.latency_percentile)
        ops = [p.op for cid, ms in self.points.items() if cid != BASELINE
               for p in map(self._pt, ms) if p.meets]
        return max(ops, key=key, default=None)

    # -- the model of unmeasured candidates --
    def model(self) -> BatchModel:
        """The model of everything measured, rebuilt between candidates; while a candidate is
        measured it stays as it was at its start (its own points re-anchor it: `judge.hopeless`)."""
        stale = self._model is None or (self._model[0] != self._seen and self.current is None)
        if stale:
            observed = [(self.specs[cid], m, self._pt(m)) for cid in self.order for m in self.points.get(cid, [])]
            previous = self._model[1] if self._model is not None else None
            self._model = (self._seen, BatchModel(observed, self.c.latency_percentile, self.c.latency_budget_ms,
                                                  self.cmin, self.cap, previous))
        return self._model[1]

    def bound(self, spec: CandidateSpec) -> Bound | None:
        """The candidate's throughput ceiling and latency floor; None until the server's
        statistics show at least two batch sizes."""
        return throughput_bound(self.model().costs.curve(spec), spec, self.c.latency_budget_ms, self.cap)

    def predict(self, spec: CandidateSpec) -> Prediction | None:
        """The model's best point for the goal (None: none predicted, or no model yet)."""
        model = self.model()
        if not model.ok:
            return None
        if self.goal == "min_latency":
            return model.at_throughput(spec, self.c.min_throughput_infer_per_s)
        return model.at_budget(spec)

    def _predicted_value(self, spec: CandidateSpec, pred: Prediction) -> float:
        if self.goal == "min_latency":
            return pred.latency_ms
        return pred.infer_per_s / (spec.instance_count if self.goal == "max_throughput_per_instance" else 1)

    def _failed_like(self, spec: CandidateSpec) -> str | None:
        """A candidate with this max_batch_size (or less) and no more instances failed to load: an
        engine built for a maximum batch, or a device too small, refuses this one too."""
        for fid, reason in self.failed.items():
            f = self.specs.get(fid)
            if (f is not None and fid != BASELINE and f.dynamic_batching and spec.dynamic_batching
                    and f.max_batch_size <= spec.max_batch_size and f.instance_count <= spec.instance_count):
                return (f"max_batch_size {spec.max_batch_size} x {spec.instance_count} instance(s) is at least "
                        f"{fid}'s, which failed: {reason}")
        return None

    # -- choosing the next candidate --
    def next_step(self) -> Step | None:
        while True:
            if self.current is not None:
                cid = self.current
                if cid in self.failed:
                    self.current = None
                    return self._end(cid, "failed")
                level, reason = self._next_level(cid)
                if level is not None:
                    return Step("measure", cid, self.specs[cid], level)
                self.current = None
                return self._end(cid, reason)
            step = self._choose()
            if step is None or step.kind != "start":
                return step
            self.current = step.candidate_id

    def _open(self, cid: str) -> bool:
        return cid not in self.ended and cid not in self.skipped and cid != self.current

    def _skip(self, cid: str, reason: str) -> Step:
        self.skipped[cid] = reason
        self.ended.add(cid)
        return Step("skip", cid, self.specs[cid], reason=reason)

    def _start(self, cid: str, guess: float) -> Step:
        self.guess[cid] = self.load.clamp(guess)
        return Step("start", cid, self.specs[cid])

    def _choose(self) -> Step | None:
        if BASELINE in self.specs and self._open(BASELINE):
            return self._start(BASELINE, self._guess(self.specs[BASELINE]))
        inc = self._incumbent()
        todo = [cid for cid in self.order if self._open(cid)]
        for cid in todo:
            why = cannot_beat_any(self, cid, inc)
            if why is not None:
                return self._skip(cid, why)
        if todo:
            cid = max(todo, key=self._promise)
            return self._start(cid, self._guess(self.specs[cid]))
        new = None if self.finishing else self._refinement(inc)
        if new is not None:
            return new
        self.finishing = True
        return self._polish_step(inc) or self._curve_step(inc)

    def _promise(self, cid: str):
        """Which open candidate to measure next: the best prediction; with no model yet, the
        largest max_batch_size at the fewest instances (its costs are the least shared), its
        middle queue delay first."""
        spec = self.specs[cid]
        pred = self.predict(spec)
        if pred is not None:
            v = self._predicted_value(spec, pred)
            return (1, -v if self.goal == "min_latency" else v, -self.order.index(cid))
        if self.model().ok:
            return (0, 0.0, -self.order.index(cid))
        delays = sorted({s.max_queue_delay_us for c, s in self.specs.items()
                         if c != BASELINE and s.max_batch_size == spec.max_batch_size})
        middle = delays[len(delays) // 2] if delays else 0
        return (0, spec.max_batch_size - spec.instance_count * 1e-3 - abs(spec.max_queue_delay_us - middle) * 1e-9
                - len(spec.preferred_batch_size) * 1e-12, -self.order.index(cid))

    def _refinement(self, inc: OperatingPoint | None) -> Step | None:
        """A new max_batch_size (`refine.propose`) at the incumbent's queue delay, preferred-size
        rule and instances, measured first; with it, judged like any candidate, the settings that
        won at the tried max_batch_size values next to it (`refine.neighbour_settings`): the queue
        delay axis was searched on those, and the best setting there is the guess in between."""
        if inc is None or len(self.refined) >= self.MAX_REFINED or self.goal == "min_latency":
            return None
        if self.refined and inc.candidate_id not in self.refined[-1]:
            return None  # the model's last suggestion did not beat the incumbent: it is no guide here
        spec, _why = propose(self, inc)
        if spec is None:
            return None
        sp = self.profile.search
        # the smallest listed delay too: ties go to the simpler config, so it has to be measured
        # wherever the incumbent's delay wins, or two runs name the two delays without listing each other
        keep = neighbour_settings(self, spec) | {(min(sp.max_queue_delay_us), spec.preferred_batch_size)}
        group = [spec] + [s for s in expand_specs([spec.max_batch_size], list(sp.max_queue_delay_us),
                                                  [spec.instance_count], sp.preferred_batch_size)
                          if s.candidate_id not in self.specs and s != spec
                          and (s.max_queue_delay_us, s.preferred_batch_size) in keep]
        for s in group:
            self.specs[s.candidate_id] = s
            self.order.append(s.candidate_id)
            self.points.setdefault(s.candidate_id, [])
            self.candidates.append((s.candidate_id, s))
        self.refined.append({s.candidate_id for s in group})
        return self._start(spec.candidate_id, self._guess(spec))

    def _polish_step(self, inc: OperatingPoint | None) -> Step | None:
        """One more point of the winner between its brackets while they leave more than POLISH_TOL
        of throughput (at most POLISH_POINTS): the answer is its best point, so it is worth closing."""
        if inc is None or self.goal == "min_latency":
            return None
        cid = inc.candidate_id
        asked = self.polished.setdefault(cid, 0)
        pts = self._pts(cid)
        if asked >= self.POLISH_POINTS or any(not p.ok for p in pts):
            return None
        bd = self.bound(self.specs[cid])
        level, _ = self.fine.for_budget(pts, None if bd is None else bd.ceiling, lambda: tail_ratio(self, cid))
        self.polished[cid] = asked + 1  # asked once per point: a resumed run replays the same asks
        if level is None:
            self.polished[cid] = self.POLISH_POINTS
            return None
        return Step("measure", cid, self.specs[cid], level, reason="polish")

    def _curve_step(self, inc: OperatingPoint | None) -> Step | None:
        """A point of the incumbent at lower load where its curve has none (at most one per share):
        `tuner plan` interpolates the expected latency at the load each replica gets."""
        if inc is None:
            return None
        cid = inc.candidate_id
        pts = [p for p in self._pts(cid) if p.ok]
        top = max((p for p in pts if p.within), key=lambda p: p.infer_per_s, default=None)
        if top is None:
            return None
        asked = self.curve_asked.setdefault(cid, 0)
        for i, share in enumerate(self.CURVE_SHARES):
            if i < asked:
                continue
            self.curve_asked[cid] = i + 1  # each share is asked once: a resumed run replays the same asks
            nxt = self.load.curve_level(pts, top, share)
            if nxt is not None:
                return Step("measure", cid, self.specs[cid], nxt, reason="curve")
        return None

    def _guess(self, spec: CandidateSpec) -> float:
        """First load level: where the model predicts the budget binds (or the required
        throughput is reached); without a model, one full batch per instance. The budget's load is
        predicted with the tail of the most similar measured candidate: an optimistic tail, right
        for skipping, would start every candidate above its budget."""
        model = self.model()
        if self.goal == "min_latency" or not model.ok:
            pred = self.predict(spec)
        else:
            pred = model.at_budget(spec, likely=True)
        if pred is not None:
            return pred.concurrency
        if spec.dynamic_batching:
            return spec.max_batch_size * spec.instance_count
        return math.sqrt(self.cmin * max(self.profile.search.concurrency))

    # -- one candidate: its load level at the budget --
    def _next_level(self, cid: str) -> Level:
        pts = self._pts(cid)
        if not pts:
            return self.guess.get(cid) or self.load.clamp(math.sqrt(self.cmin * self.cap)), ""
        if any(not p.ok for p in pts):
            return None, "failed"
        if len(pts) >= self.MAX_POINTS:
            return None, f"{self.MAX_POINTS} points measured"
        why = hopeless(self, cid, pts)
        if why is not None:
            return None, why
        if self.goal == "min_latency":
            return self.load.for_throughput(pts)
        bd = self.bound(self.specs[cid])
        return self.load.for_budget(pts, None if bd is None else bd.ceiling, lambda: tail_ratio(self, cid))
