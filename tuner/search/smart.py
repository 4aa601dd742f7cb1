"""The smart search: (almost) grid's answer with far fewer measurements.

1. The baseline, then one candidate per (max_batch_size, instances) group (its middle
   queue delay, default preferred sizes), the group with the highest bound first. A
   candidate's load level at the latency budget is found by bracketing and interpolation
   over the profile's concurrency range, any integer in it, not by stepping through the
   listed levels (`bracket.LoadSearch`); the first level is guessed from Little's law,
   the ceiling and what earlier candidates showed.
2. Each untried group's compute ceiling (`ceiling.throughput_bound`, fitted to the
   server's own compute statistics seen so far) bounds what any of its candidates can
   do. A group whose ceiling, SKIP_MARGIN added for fit error, cannot beat the incumbent
   (the best point meeting every constraint so far) is skipped: every candidate listed
   with the reason.
3. Around the best groups (within REFINE_PCT of the incumbent), the other queue delays
   and preferred sizes are measured, starting at the group's best load level; a variant
   no better than its group's first candidate at that level stops there. Other groups'
   variants are skipped with the reason: they change how batches form, not the ceiling.
4. The winner gets points at lower load (CURVE_SHARES of its best throughput) so
   `tuner plan` can interpolate its latency curve.

min_latency looks for the lowest load reaching the required throughput instead, and
skips groups whose ceiling cannot reach it. Deterministic: every decision is a function
of the observations in order, so a resumed sweep replays it with the stored points.
"""

from __future__ import annotations

import math

from tuner.config import CandidateSpec
from tuner.results.records import Measurement
from tuner.search.base import BASELINE, Step, Strategy
from tuner.search.bracket import Level, LoadPoint, LoadSearch, median, read_point
from tuner.search.ceiling import (
    Bound,
    ComputeFit,
    batch_compute_stats,
    bound_value,
    cannot_beat,
    throughput_bound,
)
from tuner.search.recommend import OperatingPoint, objective_key, objective_value


class SmartStrategy(Strategy):
    """Reaches (almost) grid's answer with far fewer measurements; the method is in the
    module docstring."""

    name = "smart"
    SKIP_MARGIN = 0.05   # a ceiling must beat the incumbent by this much to be skipped
    REFINE_PCT = 5.0     # refine queue delay / preferred sizes of groups this close to the incumbent
    GAIN_TOL = 0.03      # stop bisecting when at most this much throughput is left between the brackets
    MAX_POINTS = 7       # per candidate
    MAX_STEP = 4.0       # the most the load changes in one extrapolated step
    CURVE_SHARES = (0.6, 0.3)  # of the winner's best throughput: capacity plans run replicas below it

    def __init__(self, profile, candidates: list[tuple[str, CandidateSpec]]):
        super().__init__(profile, candidates)
        self.c = profile.constraints
        self.goal = getattr(profile, "goal", "max_throughput")
        levels = profile.search.concurrency
        self.cmin, self.cmax = min(levels), max(levels)
        self.load = LoadSearch(self.c, self.cmin, self.cmax, profile.search.plateau_pct, self.GAIN_TOL,
                               self.MAX_STEP)
        self.specs = dict(candidates)
        self.order = [cid for cid, _ in candidates]
        self.groups: dict[tuple, list[str]] = {}
        for cid, spec in candidates:
            if cid != BASELINE:
                self.groups.setdefault(self._group(spec), []).append(cid)
        self.primary = {g: self._pick_primary(cids) for g, cids in self.groups.items()}
        self.current: str | None = None
        self.guess: dict[str, int] = {}
        self.skipped: dict[str, str] = {}
        self.curve_asked: dict[str, int] = {}
        self._cache: dict[int, tuple[Measurement, LoadPoint]] = {}
        self._fits: dict[tuple[int, int], ComputeFit] = {}
        self._seen = 0  # observations so far (keys the fit cache)

    def observe(self, m: Measurement) -> None:
        super().observe(m)
        self._seen += 1

    # -- bookkeeping --
    @staticmethod
    def _group(spec: CandidateSpec) -> tuple:
        return (spec.max_batch_size, spec.instance_count, spec.dynamic_batching)

    def _pick_primary(self, cids: list[str]) -> str:
        """The group's first candidate: the middle queue delay, the default preferred sizes."""
        delays = sorted({self.specs[c].max_queue_delay_us for c in cids})
        mid = delays[len(delays) // 2]
        same = [c for c in cids if self.specs[c].max_queue_delay_us == mid]
        return next((c for c in same if not self.specs[c].preferred_batch_size), same[0])

    def _pt(self, m: Measurement) -> LoadPoint:
        hit = self._cache.get(id(m))
        if hit is not None and hit[0] is m:  # the id of a collected measurement can be reused
            return hit[1]
        spec = self.specs.get(m.candidate_id)
        pt = read_point(m, spec.instance_count if spec else 1, self.c)
        self._cache[id(m)] = (m, pt)
        return pt

    def _pts(self, cid: str) -> list[LoadPoint]:
        return sorted((self._pt(m) for m in self.points.get(cid, [])), key=lambda p: p.concurrency)

    def _value(self, op: OperatingPoint) -> float:
        return objective_value(self.goal, op, self.c.latency_percentile)

    def _incumbent(self) -> OperatingPoint | None:
        key = objective_key(self.goal, self.c.latency_percentile)
        ops = [p.op for cid, ms in self.points.items() if cid != BASELINE
               for p in map(self._pt, ms) if p.meets]
        return max(ops, key=key, default=None)

    def _group_best(self, g: tuple) -> OperatingPoint | None:
        key = objective_key(self.goal, self.c.latency_percentile)
        ops = [p.op for cid in self.groups[g] for p in self._pts(cid) if p.meets]
        return max(ops, key=key, default=None)

    # -- the compute model --
    def _fit(self, instances: int) -> ComputeFit:
        """Statistics of candidates with no more instances than `instances` (see ceiling.py)."""
        key = (instances, self._seen)
        if key not in self._fits:
            ms = [m for cid in self.order if self.specs[cid].instance_count <= instances
                  for m in self.points.get(cid, [])]
            self._fits[key] = ComputeFit(batch_compute_stats(ms))
        return self._fits[key]

    def bound(self, spec: CandidateSpec) -> Bound | None:
        """The candidate's throughput ceiling and latency floor; None until the server's
        statistics show at least two batch sizes."""
        return throughput_bound(self._fit(spec.instance_count), spec, self.c.latency_budget_ms, self.cmax)

    def _cannot_beat(self, spec: CandidateSpec, inc: OperatingPoint | None) -> str | None:
        return cannot_beat(self.goal, spec, self.bound(spec), inc, self.c, self.SKIP_MARGIN)

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

    def _start(self, cid: str, guess: int) -> Step:
        self.guess[cid] = self.load.clamp(guess)
        return Step("start", cid, self.specs[cid])

    def _choose(self) -> Step | None:
        if BASELINE in self.specs and self._open(BASELINE):
            return self._start(BASELINE, self._guess(self.specs[BASELINE]))
        inc = self._incumbent()
        # 1. one candidate per group, the highest bound first
        todo = [g for g, p in self.primary.items() if self._open(p)]
        for g in todo:
            why = self._cannot_beat(self.specs[self.primary[g]], inc)
            if why is not None:
                return self._skip_group(g, why)
        if todo:
            g = max(todo, key=self._group_score)
            return self._start(self.primary[g], self._guess(self.specs[self.primary[g]]))
        # 2. the other queue delays / preferred sizes, around the best groups
        ranked = sorted((g for g in self.groups if any(self._open(c) for c in self.groups[g])),
                        key=self._group_rank)
        for g in ranked:
            for cid in self.groups[g]:
                if self._open(cid):
                    return self._variant_step(g, cid, inc)
        # 3. the winner's latency curve below its best load, for capacity planning
        return self._curve_step(inc)

    def _variant_step(self, g: tuple, cid: str, inc: OperatingPoint | None) -> Step:
        """Start or skip a queue delay / preferred sizes variant of the group's primary."""
        why = self._cannot_beat(self.specs[cid], inc)
        if why is not None:
            return self._skip(cid, why)
        gb = self._group_best(g)
        prim = self.primary[g]
        if prim in self.failed:
            return self._skip(cid, f"same max_batch_size and instances as {prim}, which failed: "
                                   f"{self.failed[prim]}")
        spec, first = self.specs[cid], self.specs[prim]
        if inc is None and gb is None and spec.max_queue_delay_us < first.max_queue_delay_us:
            # nothing meets the constraints yet: less queue delay is what may get there
            low = min((p.concurrency for p in self._pts(prim) if p.ok), default=None)
            return self._start(cid, low or self._guess(spec))
        if gb is None or inc is None or not self._close_to(self._value(gb), self._value(inc)):
            have = (f"{self._value(gb):.1f}" if gb is not None else "no feasible point")
            return self._skip(cid, (
                f"queue delay / preferred sizes variant of {prim}, whose group's best ({have}) is not within "
                f"{self.REFINE_PCT:g}% of the incumbent"
                + (f" {inc.candidate_id} ({self._value(inc):.1f})" if inc is not None else "")
                + "; variants change how batches form, not the compute ceiling"))
        return self._start(cid, self._answer_level(prim) or self._guess(self.specs[cid]))

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

    def _skip_group(self, g: tuple, why: str) -> Step:
        """Every candidate of the group is listed, one step each, the primary last (the
        group stays first in line until all are skipped)."""
        cids = sorted((c for c in self.groups[g] if self._open(c)), key=lambda c: c == self.primary[g])
        return self._skip(cids[0], why)

    def _group_score(self, g: tuple):
        spec = self.specs[self.primary[g]]
        bd = self.bound(spec)
        if bd is None:  # unknown: measure the largest first, it shows the most batch sizes
            return (1, spec.max_batch_size * spec.instance_count, -self.order.index(self.primary[g]))
        v = bound_value(self.goal, spec, bd, self.c.min_throughput_infer_per_s)
        return (0, -v if self.goal == "min_latency" else v, -self.order.index(self.primary[g]))

    def _group_rank(self, g: tuple):
        gb = self._group_best(g)
        if gb is None:
            return (1, 0.0, self.order.index(self.groups[g][0]))
        v = self._value(gb)
        return (0, v if self.goal == "min_latency" else -v, self.order.index(self.groups[g][0]))

    def _close_to(self, value: float, inc: float) -> bool:
        if self.goal == "min_latency":
            return value <= inc * (1 + self.REFINE_PCT / 100.0)
        return value >= inc * (1 - self.REFINE_PCT / 100.0)

    def _answer_level(self, cid: str) -> int | None:
        ops = [p for p in self._pts(cid) if p.meets]
        if not ops:
            return None
        key = objective_key(self.goal, self.c.latency_percentile)
        return max(ops, key=lambda p: key(p.op)).concurrency

    def _guess(self, spec: CandidateSpec) -> int:
        """First load level: where the predicted latency meets the budget (or the required
        throughput is reached), from Little's law and what earlier candidates showed."""
        c = self.c
        bd = self.bound(spec)
        if bd is None:
            if spec.dynamic_batching:
                return self.load.clamp(spec.max_batch_size * spec.instance_count)
            return self.load.clamp(math.sqrt(self.cmin * self.cmax))
        eff, ratio = self._learned()
        if self.goal == "min_latency":
            need = c.min_throughput_infer_per_s
            return self.load.clamp(need * max(bd.latency_floor, 1e-3) * 1.5 / 1000.0)
        infer_per_s = bd.ceiling * eff
        return self.load.clamp(infer_per_s * (c.latency_budget_ms / ratio) / 1000.0)

    def _learned(self) -> tuple[float, float]:
        """(measured / ceiling at the best point, percentile / mean latency near the budget)."""
        effs, ratios = [], []
        for cid in self.order:
            pts = self._pts(cid)
            for p in pts:
                if p.ok and p.within and p.latency_ms >= 0.5 * self.c.latency_budget_ms and p.mean_ms > 0:
                    ratios.append(p.latency_ms / p.mean_ms)
            if cid == BASELINE or cid not in self.ended or cid in self.skipped:
                continue
            best = max((p.infer_per_s for p in pts if p.within), default=None)
            bd = self.bound(self.specs[cid])
            if best is not None and bd is not None and bd.ceiling > 0:
                effs.append(min(1.0, best / bd.ceiling))
        eff = median(effs) if effs else 0.8
        ratio = min(3.0, max(1.0, median(ratios))) if ratios else 1.3
        return eff, ratio

    # -- one candidate: its load level at the budget --
    def _next_level(self, cid: str) -> Level:
        pts = self._pts(cid)
        if not pts:
            return self.guess.get(cid) or self.load.clamp(math.sqrt(self.cmin * self.cmax)), ""
        if any(not p.ok for p in pts):
            return None, "failed"
        if len(pts) >= self.MAX_POINTS:
            return None, f"{self.MAX_POINTS} points measured"
        if self.goal == "min_latency":
            return self.load.for_throughput(pts)
        if len(pts) == 1:
            why = self._no_better_than_primary(cid, pts[0])
            if why is not None:
                return None, why
        bd = self.bound(self.specs[cid])
        return self.load.for_budget(pts, None if bd is None else bd.ceiling, lambda: self._learned()[1])

    def _no_better_than_primary(self, cid: str, v: LoadPoint) -> str | None:
        """A variant's first point, taken at its group primary's best level: it stops there when
        it is clearly worse than the primary's point at that level."""
        if cid == BASELINE:
            return None
        prim = self.primary.get(self._group(self.specs[cid]))
        if prim is None or prim == cid:
            return None
        ref = next((p for p in self._pts(prim) if p.concurrency == v.concurrency and p.ok), None)
        return None if ref is None else self.load.no_better_than(v, ref, prim)
