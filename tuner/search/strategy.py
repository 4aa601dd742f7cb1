"""Search strategies: which (candidate, load level) to measure next.

A strategy is pure: it sees every measurement the sweep made (`observe`)
and answers the next step (`next_step`); the sweep does the I/O. Because the
answers depend only on what was observed, a resumed sweep that feeds stored
points back replays the same path and measures only what is missing.

Steps:
    Step("measure", cid, spec, concurrency)   measure this candidate at this load
    Step("end", cid, reason=...)              the candidate is done (budget, plateau, ...)
    Step("skip", cid, spec, reason=...)       not measured at all, with the reason

Strategies: "grid" (every candidate, climbed through the listed load levels)
and "smart" (bracketing of each candidate's load level at the budget, compute
ceilings from the server's statistics to skip candidates that cannot win,
queue delay / preferred sizes refined around the best); see SmartStrategy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.config import CandidateSpec
from tuner.search.recommend import OperatingPoint, meets, objective_key, objective_value
from tuner.results.store import Measurement

BASELINE = "baseline"


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
    lat = s.latency_ms[percentile]
    if lat != lat or lat > budget_ms:
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


# ----------------------------------------------------------------------------- smart

@dataclass(frozen=True)
class _Pt:
    """What the smart search reads from one measured point."""

    c: int
    ok: bool        # status ok and requests completed
    x: float        # infer/s
    lat: float      # the budget's percentile (ms; inf when none)
    mean: float     # mean latency (ms)
    within: bool    # latency budget, error rate and GPU memory met (what load can break)
    other_ok: bool  # error rate and GPU memory met (when not within: latency alone broke it)
    meets: bool     # every constraint (min throughput included): counts for the incumbent
    op: OperatingPoint | None


class ComputeFit:
    """compute_infer per execution vs batch size: `fixed + per_item * batch` (ms), fitted
    by weighted least squares on the server's own statistics (executions per batch size)."""

    MIN_EXECUTIONS = 10

    def __init__(self, obs: dict[int, tuple[int, int]]):
        self.obs = {b: (n, ns) for b, (n, ns) in obs.items() if n > 0}
        self.req_batch = min(self.obs) if self.obs else 1
        self.fixed_ms = self.per_item_ms = float("nan")
        pts = [(b, n, ns / n / 1e6) for b, (n, ns) in sorted(self.obs.items())]
        if len(pts) < 2 or sum(n for _, n, _ in pts) < self.MIN_EXECUTIONS:
            return
        w = sum(n for _, n, _ in pts)
        sx = sum(n * b for b, n, _ in pts)
        sy = sum(n * y for _, n, y in pts)
        sxx = sum(n * b * b for b, n, _ in pts)
        sxy = sum(n * b * y for b, n, y in pts)
        den = w * sxx - sx * sx
        if den <= 0:
            return
        k = (w * sxy - sx * sy) / den
        a = (sy - k * sx) / w
        if k < 0:  # noise: no per-item cost visible; the cheapest execution bounds them all
            k, a = 0.0, min(y for _, _, y in pts)
        self.fixed_ms, self.per_item_ms = max(a, 0.0), k

    @property
    def ok(self) -> bool:
        return self.fixed_ms == self.fixed_ms

    def compute_ms(self, b: int) -> float:
        """Estimated compute per execution of batch b; where b was seen often, the lower of
        the fit and the observed mean (an optimistic estimate keeps the ceiling an upper bound)."""
        est = self.fixed_ms + self.per_item_ms * b
        seen = self.obs.get(b)
        if seen is not None and seen[0] >= 5:
            est = min(est, seen[1] / seen[0] / 1e6)
        return max(est, 1e-3)


@dataclass(frozen=True)
class Bound:
    """An untried candidate's optimistic limits, from the compute fit."""

    ceiling: float        # infer/s: instances * b / compute(b), best b within the budget and the load range
    batch: int            # the b that gives it
    compute_ms: float     # compute(b)
    latency_floor: float  # ms: one execution of the smallest batch (no request can be faster)


class SmartStrategy(Strategy):
    """Reaches (almost) grid's answer with far fewer measurements.

    1. The baseline, then one candidate per (max_batch_size, instances) group
       (its middle queue delay, default preferred sizes), the group with the
       highest bound first. A candidate's load level at the latency budget is
       found by bracketing and interpolation (log-log secant steps, at most
       MAX_STEP x per step) over the profile's concurrency range, any integer
       in it, not by stepping through the listed levels; it stops when at most
       GAIN_TOL more throughput can lie between the last level within the
       budget and the first over it, at the range's top, or on a plateau.
       A point over the budget by its tail alone (mean latency well within) is
       checked once at a nearby load before it is believed.
    2. Each untried group's ceiling, instances * b / compute(b), with
       compute(b) = fixed + per_item * b fitted by weighted least squares to
       the server's own compute statistics seen so far (per batch size, from
       candidates with no more instances) and b the largest batch whose
       compute fits in the budget and the load range, bounds what any of its
       candidates can do. A group whose ceiling, SKIP_MARGIN added for fit
       error, cannot beat the incumbent (the best point meeting every
       constraint so far) is skipped: every candidate listed with the reason.
       The fit is exact for a fixed + per-item cost; a cost that grows faster
       than linear at large batches makes it optimistic there (still safe).
    3. Around the best groups (within REFINE_PCT of the incumbent), the other
       queue delays and preferred sizes are measured, starting at the group's
       best load level; a variant no better than its group's first candidate
       at that level stops there. Other groups' variants are skipped with the
       reason.
    4. The winner gets points at lower load (CURVE_SHARES of its best
       throughput) so `tuner plan` can interpolate its latency curve.

    min_latency looks for the lowest load reaching the required throughput
    instead, and skips groups whose ceiling cannot reach it. Deterministic:
    every decision is a function of the observations in order, so a resumed
    sweep replays it with the stored points.
    """

    name = "smart"
    SKIP_MARGIN = 0.05   # a ceiling must beat the incumbent by this much to be skipped
    REFINE_PCT = 5.0     # refine queue delay / preferred sizes of groups this close to the incumbent
    GAIN_TOL = 0.03      # stop bisecting when at most this much throughput is left between the brackets
    MAX_POINTS = 7       # per candidate
    MAX_STEP = 4.0       # the most the load changes in one extrapolated step

    def __init__(self, profile, candidates: list[tuple[str, CandidateSpec]]):
        super().__init__(profile, candidates)
        self.c = profile.constraints
        self.goal = getattr(profile, "goal", "max_throughput")
        levels = profile.search.concurrency
        self.cmin, self.cmax = min(levels), max(levels)
        self.plateau = profile.search.plateau_pct / 100.0
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
        self._cache: dict[int, tuple[Measurement, _Pt]] = {}
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

    def _pt(self, m: Measurement) -> _Pt:
        hit = self._cache.get(id(m))
        if hit is not None and hit[0] is m:
            return hit[1]
        c = self.c
        op = None
        ok = m.status == "ok" and bool(m.windows)
        x, lat, mean, within, other_ok, meets_all = 0.0, float("inf"), float("inf"), False, False, False
        if ok:
            spec = self.specs.get(m.candidate_id)
            op = OperatingPoint.of(m, spec.instance_count if spec else 1)
            s = m.summary()
            ok = s.completed > 0
            x = op.throughput_infer_per_s
            lat = op.latency_ms[c.latency_percentile]
            lat = lat if lat == lat else float("inf")
            mean = s.latency_ms.get("mean", lat)
            mean = mean if mean == mean else float("inf")
            total = s.completed + s.errors
            other_ok = (ok and total > 0 and s.errors / total <= c.max_error_rate
                        and not (c.max_gpu_memory_mb is not None and op.gpu_memory_mb is not None
                                 and op.gpu_memory_mb > c.max_gpu_memory_mb))
            within = other_ok and lat <= c.latency_budget_ms
            meets_all = ok and meets(op, m, c)
        pt = _Pt(m.concurrency, ok, x, lat, mean, within, other_ok, meets_all, op)
        self._cache[id(m)] = (m, pt)
        return pt

    def _pts(self, cid: str) -> list[_Pt]:
        return sorted((self._pt(m) for m in self.points.get(cid, [])), key=lambda p: p.c)

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
        """Statistics of candidates with no more instances than `instances`: more instances
        share the device and only make an execution slower, so the estimate stays optimistic."""
        hit = self._fits.get((instances, self._seen))
        if hit is not None:
            return hit
        agg: dict[int, list[int]] = {}
        for cid in self.order:
            spec = self.specs[cid]
            if spec.instance_count > instances:
                continue
            for m in self.points.get(cid, []):
                for w in m.windows:
                    if w.server is None:
                        continue
                    for b, (n, ns) in w.server.batch_compute_infer.items():
                        acc = agg.setdefault(int(b), [0, 0])
                        acc[0] += int(n)
                        acc[1] += int(ns)
        fit = self._fits[(instances, self._seen)] = ComputeFit({b: (n, ns) for b, (n, ns) in agg.items()})
        return fit

    def bound(self, spec: CandidateSpec) -> Bound | None:
        """The candidate's throughput ceiling and latency floor; None until the server's
        statistics show at least two batch sizes."""
        fit = self._fit(spec.instance_count)
        if not fit.ok:
            return None
        rb = fit.req_batch
        top = spec.max_batch_size if spec.dynamic_batching else rb
        best = Bound(0.0, rb, fit.compute_ms(rb), fit.compute_ms(rb))
        b = rb
        while b <= max(top, rb):
            comp = fit.compute_ms(b)
            if comp > self.c.latency_budget_ms:
                break  # every request of such a batch waits at least its compute: over budget
            parallel = min(float(spec.instance_count), self.cmax * rb / b)  # batches in flight
            thr = parallel * b / comp * 1000.0
            if thr > best.ceiling:
                best = Bound(thr, b, comp, best.latency_floor)
            b += rb
        return best

    def _bound_value(self, spec: CandidateSpec, bd: Bound) -> float:
        if self.goal == "min_latency":
            return bd.latency_floor if bd.ceiling >= self.c.min_throughput_infer_per_s else float("inf")
        if self.goal == "max_throughput_per_instance":
            return bd.ceiling / spec.instance_count
        return bd.ceiling

    def _cannot_beat(self, spec: CandidateSpec, inc: OperatingPoint | None) -> str | None:
        """Why the candidate cannot beat the incumbent (None: it might)."""
        bd = self.bound(spec)
        if bd is None:
            return None
        pct = self.c.latency_percentile
        how = (f"compute ceiling {bd.ceiling:.0f} infer/s ({spec.instance_count} instance(s) x batch "
               f"{bd.batch} / {bd.compute_ms:.2f} ms, from the server's compute statistics)")
        if self.goal == "min_latency":
            need = self.c.min_throughput_infer_per_s
            if bd.ceiling * (1 + self.SKIP_MARGIN) < need:
                return f"{how} cannot reach the required {need:g} infer/s"
            if inc is not None and bd.latency_floor * (1 - self.SKIP_MARGIN) > inc.latency_ms[pct]:
                return (f"latency floor {bd.latency_floor:.2f} ms (one execution) cannot beat the incumbent "
                        f"{inc.candidate_id} at {pct} {inc.latency_ms[pct]:.2f} ms")
            return None
        if inc is None:
            return None
        value = self._bound_value(spec, bd)
        have = self._value(inc)
        if value * (1 + self.SKIP_MARGIN) >= have:
            return None
        unit = "infer/s per instance" if self.goal == "max_throughput_per_instance" else "infer/s"
        return (f"{how}{' = ' + format(value, '.0f') + ' ' + unit if unit != 'infer/s' else ''} cannot beat "
                f"the incumbent {inc.candidate_id} at {have:.0f} {unit}")

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
        self.guess[cid] = self._clamp(guess)
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
                if not self._open(cid):
                    continue
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
                    low = min((p.c for p in self._pts(prim) if p.ok), default=None)
                    return self._start(cid, low or self._guess(spec))
                if gb is None or inc is None or not self._close_to(self._value(gb), self._value(inc)):
                    have = (f"{self._value(gb):.1f}" if gb is not None else "no feasible point")
                    return self._skip(cid, (
                        f"queue delay / preferred sizes variant of {prim}, whose group's best ({have}) is not within "
                        f"{self.REFINE_PCT:g}% of the incumbent"
                        + (f" {inc.candidate_id} ({self._value(inc):.1f})" if inc is not None else "")
                        + "; variants change how batches form, not the compute ceiling"))
                return self._start(cid, self._answer_level(prim) or self._guess(self.specs[cid]))
        # 3. the winner's latency curve below its best load, for capacity planning
        return self._curve_step(inc)

    CURVE_SHARES = (0.6, 0.3)  # of the winner's best throughput: capacity plans run replicas below it

    def _curve_step(self, inc: OperatingPoint | None) -> Step | None:
        """A point of the incumbent at lower load where its curve has none (at most one per share):
        `tuner plan` interpolates the expected latency at the load each replica gets."""
        if inc is None:
            return None
        cid = inc.candidate_id
        pts = [p for p in self._pts(cid) if p.ok]
        top = max((p for p in pts if p.within), key=lambda p: p.x, default=None)
        if top is None:
            return None
        asked = self.curve_asked.setdefault(cid, 0)
        for i, share in enumerate(self.CURVE_SHARES):
            if i < asked:
                continue
            self.curve_asked[cid] = i + 1
            if any(p.x <= (share + 0.1) * top.x for p in pts if p.c < top.c):
                continue
            below = [p for p in pts if p.c < top.c]
            if below:  # throughput vs load so far: aim along it
                low = min(below, key=lambda p: p.c)
                frac = (share * top.x - low.x) / max(top.x - low.x, 1e-9)
                target = low.c * (top.c / low.c) ** min(1.0, max(0.0, frac)) if share * top.x > low.x else \
                    low.c * share * top.x / max(low.x, 1e-9)
            else:
                target = top.c * share * 0.5  # a batching server is well above proportional at part load
            nxt = self._free(math.floor(target), pts, self.cmin - 1, top.c)
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
        v = self._bound_value(spec, bd)
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
        return max(ops, key=lambda p: key(p.op)).c

    def _clamp(self, c: float) -> int:
        return int(min(self.cmax, max(self.cmin, round(c))))

    def _guess(self, spec: CandidateSpec) -> int:
        """First load level: where the predicted latency meets the budget (or the required
        throughput is reached), from Little's law and what earlier candidates showed."""
        c = self.c
        bd = self.bound(spec)
        if bd is None:
            if spec.dynamic_batching:
                return self._clamp(spec.max_batch_size * spec.instance_count)
            return self._clamp(math.sqrt(self.cmin * self.cmax))
        eff, ratio = self._learned()
        if self.goal == "min_latency":
            need = c.min_throughput_infer_per_s
            return self._clamp(need * max(bd.latency_floor, 1e-3) * 1.5 / 1000.0)
        x = bd.ceiling * eff
        return self._clamp(x * (c.latency_budget_ms / ratio) / 1000.0)

    def _learned(self) -> tuple[float, float]:
        """(measured / ceiling at the best point, percentile / mean latency near the budget)."""
        effs, ratios = [], []
        for cid in self.order:
            pts = self._pts(cid)
            for p in pts:
                if p.ok and p.within and p.lat >= 0.5 * self.c.latency_budget_ms and p.mean > 0:
                    ratios.append(p.lat / p.mean)
            if cid == BASELINE or cid not in self.ended or cid in self.skipped:
                continue
            best = max((p.x for p in pts if p.within), default=None)
            bd = self.bound(self.specs[cid])
            if best is not None and bd is not None and bd.ceiling > 0:
                effs.append(min(1.0, best / bd.ceiling))
        eff = _median(effs) if effs else 0.8
        ratio = min(3.0, max(1.0, _median(ratios))) if ratios else 1.3
        return eff, ratio

    # -- one candidate: its load level at the budget --
    def _next_level(self, cid: str) -> tuple[int | None, str]:
        pts = self._pts(cid)
        if not pts:
            return self.guess.get(cid) or self._clamp(math.sqrt(self.cmin * self.cmax)), ""
        if any(not p.ok for p in pts):
            return None, "failed"
        if len(pts) >= self.MAX_POINTS:
            return None, f"{self.MAX_POINTS} points measured"
        if self.goal == "min_latency":
            return self._next_for_throughput(cid, pts)
        if len(pts) == 1:
            why = self._no_better_than_primary(cid, pts[0])
            if why is not None:
                return None, why
        return self._next_for_budget(cid, pts)

    def _no_better_than_primary(self, cid: str, v: _Pt) -> str | None:
        """A variant's first point, taken at its group primary's best level: it stops there when
        it is clearly worse (2 x GAIN_TOL less throughput and no lower percentile, or over the
        budget without more throughput)."""
        if cid == BASELINE:
            return None
        prim = self.primary.get(self._group(self.specs[cid]))
        if prim is None or prim == cid:
            return None
        ref = next((p for p in self._pts(prim) if p.c == v.c and p.ok), None)
        if ref is None or not ref.within:
            return None
        # "clearly worse" only: two measurements of one config differ by a few percent on a busy host
        if v.within and (v.x >= ref.x * (1 - 2 * self.GAIN_TOL) or v.lat < ref.lat * (1 - self.GAIN_TOL)):
            return None
        if not v.within and v.x > ref.x * (1 + self.GAIN_TOL):
            return None
        pct = self.c.latency_percentile
        return (f"no better than {prim} at concurrency {v.c}: {v.x:.0f} vs {ref.x:.0f} infer/s, "
                f"{pct} {v.lat:.2f} vs {ref.lat:.2f} ms")

    def _free(self, c: int, pts: list[_Pt], lo: int, hi: int) -> int | None:
        """An unmeasured level near c strictly between lo and hi (None: none left)."""
        taken = {p.c for p in pts}
        c = min(hi - 1, max(lo + 1, c))
        for d in range(0, hi - lo):
            for cand in (c + d, c - d):
                if lo < cand < hi and cand not in taken:
                    return cand
        return None

    def _suspect(self, pts: list[_Pt]) -> _Pt | None:
        """A point over the budget by its tail alone: its mean latency, times the percentile /
        mean ratio the candidate (else the run) shows near the budget, is well within. A one-off stall on a noisy host looks like
        this; the candidate's first such point is checked at a nearby load, not believed."""
        budget = self.c.latency_budget_ms
        own = [p.lat / p.mean for p in pts if p.within and p.lat >= 0.5 * budget and p.mean > 0]
        ratio = min(3.0, max(1.0, _median(own))) if own else self._learned()[1]  # its own tail first
        odd = [p for p in pts if p.ok and p.other_ok and p.lat > budget and p.mean * ratio <= 0.9 * budget]
        return odd[0] if len(odd) == 1 else None

    def _next_for_budget(self, cid: str, pts: list[_Pt]) -> tuple[int | None, str]:
        c = self.c
        budget = c.latency_budget_ms
        every = pts
        odd = self._suspect(pts)
        if odd is not None:
            pts = [p for p in pts if p is not odd]
            if not pts:
                nxt = self._free(math.floor(odd.c * 0.9), every, self.cmin - 1, odd.c)
                if nxt is not None:
                    return nxt, ""
                pts = every
        inside = [p for p in pts if p.within]
        lo = max(inside, key=lambda p: p.c, default=None)
        above = [p for p in pts if not p.within and (lo is None or p.c > lo.c)]
        hi = min(above, key=lambda p: p.c, default=None)
        if lo is None:
            low = pts[0]
            if low.c <= self.cmin:
                return None, f"budget: {c.latency_percentile} {low.lat:.2f} ms > {budget:g} ms at the lowest load ({low.c})"
            if low.lat <= budget:  # errors or memory, not latency: halve the load
                target = low.c / 2.0
            else:
                target = low.c * (0.95 * budget / low.lat) ** (1.0 / self._elasticity(pts, low, "lat"))
            target = max(target, low.c / self.MAX_STEP)
            nxt = self._free(min(low.c - 1, max(self.cmin, math.floor(target))), every, self.cmin - 1, low.c)
            return (nxt, "") if nxt is not None else (None, "budget")
        # a cheap victory: the load range's top meets the budget
        if hi is None and lo.c >= self.cmax:
            return None, f"max_load: the range's top ({self.cmax}) meets the budget"
        bd = self.bound(self.specs[cid])
        if bd is not None and lo.x >= (1 - self.GAIN_TOL) * bd.ceiling:
            return None, f"ceiling: {lo.x:.0f} infer/s at concurrency {lo.c} is within {self.GAIN_TOL:.0%} of the compute ceiling"
        if hi is None:
            prev = max((p for p in inside if p.c <= lo.c / 1.25), key=lambda p: p.c, default=None)
            saturated = bd is None or lo.x >= 0.75 * bd.ceiling or lo.lat >= 0.75 * budget
            if prev is not None and saturated and lo.x < prev.x * (1 + max(self.plateau, self.GAIN_TOL)):
                return None, (f"plateau: {lo.x:.0f} infer/s at concurrency {lo.c} vs {prev.x:.0f} at {prev.c}")
            beta = self._elasticity(pts, lo, "lat")
            target = lo.c * (budget / max(lo.lat, 1e-6)) ** (1.0 / beta)
            if target <= lo.c * (1 + self.GAIN_TOL):
                # throughput grows at most in proportion to load (latency does not fall with it)
                return None, (f"budget: {c.latency_percentile} {lo.lat:.2f} ms at concurrency {lo.c}; at most "
                              f"{self.GAIN_TOL:.0%} more load fits")
            target = min(target, lo.c * self.MAX_STEP)
            nxt = self._free(max(lo.c + 1, math.ceil(target)), every, lo.c, self.cmax + 1)
            return (nxt, "") if nxt is not None else (None, "max_load")
        # bracketed: lo meets the budget, hi does not. hi's throughput bounds what lies between
        # (throughput does not fall as load grows); one below lo's is noise and bounds nothing.
        if hi.x >= lo.x >= (1 - self.GAIN_TOL) * hi.x:
            return None, (f"budget: concurrency {lo.c} meets it ({c.latency_percentile} {lo.lat:.2f} ms), "
                          f"{hi.c} does not ({hi.lat:.2f} ms); at most {self.GAIN_TOL:.0%} more throughput between")
        if hi.c - lo.c <= 1:
            return None, f"budget: concurrency {lo.c} meets it, {hi.c} does not"
        if lo.lat > 0 and hi.lat > lo.lat and math.isfinite(hi.lat):
            t = (math.log(0.98 * budget) - math.log(lo.lat)) / (math.log(hi.lat) - math.log(lo.lat))
        else:
            t = 0.5
        # ... or lo's own slope, whichever reaches further: one stalled window can make hi's
        # percentile many times the budget and drag the interpolation down to lo
        beta = self._elasticity([p for p in pts if p.c <= lo.c], lo, "lat")
        t = max(t, math.log(0.98 * budget / max(lo.lat, 1e-6)) / beta / math.log(hi.c / lo.c))
        target = math.exp(math.log(lo.c) + min(1.0, max(0.0, t)) * (math.log(hi.c) - math.log(lo.c)))
        if target <= lo.c * (1 + self.GAIN_TOL):
            return None, (f"budget: concurrency {lo.c} meets it ({c.latency_percentile} {lo.lat:.2f} ms), {hi.c} "
                          f"does not ({hi.lat:.2f} ms); at most {self.GAIN_TOL:.0%} more load fits")
        t = min(0.85, max(0.15, t))
        target = math.exp(math.log(lo.c) + t * (math.log(hi.c) - math.log(lo.c)))
        nxt = self._free(int(round(target)), every, lo.c, hi.c)
        return (nxt, "") if nxt is not None else (None, f"budget: between concurrency {lo.c} and {hi.c}")

    def _next_for_throughput(self, cid: str, pts: list[_Pt]) -> tuple[int | None, str]:
        """min_latency: the lowest load that reaches the required throughput."""
        c = self.c
        need = c.min_throughput_infer_per_s
        enough = [p for p in pts if p.x >= need]
        hi = min(enough, key=lambda p: p.c, default=None)
        below = [p for p in pts if p.x < need and (hi is None or p.c < hi.c)]
        lo = max(below, key=lambda p: p.c, default=None)
        if hi is not None and not hi.within:
            return None, (f"budget: {c.latency_percentile} {hi.lat:.2f} ms > {c.latency_budget_ms:g} ms at the "
                          f"lowest load reaching {need:g} infer/s ({hi.c})")
        if hi is None:
            top = lo
            if top.c >= self.cmax:
                return None, f"min throughput: {top.x:.0f} < {need:g} infer/s at the range's top ({top.c})"
            if not top.within:
                return None, f"budget: over it at concurrency {top.c} before reaching {need:g} infer/s"
            beta = self._elasticity(pts, top, "x")
            target = min(top.c * (1.03 * need / max(top.x, 1e-6)) ** (1.0 / beta), top.c * self.MAX_STEP)
            nxt = self._free(max(top.c + 1, math.ceil(target)), pts, top.c, self.cmax + 1)
            return (nxt, "") if nxt is not None else (None, "max_load")
        if lo is None:
            if hi.c <= self.cmin:
                return None, f"lowest load ({hi.c}) reaches {need:g} infer/s"
            beta = self._elasticity(pts, hi, "x")
            target = max(hi.c * (1.03 * need / hi.x) ** (1.0 / beta), hi.c / self.MAX_STEP)
            nxt = self._free(min(hi.c - 1, math.floor(target)), pts, self.cmin - 1, hi.c)
            return (nxt, "") if nxt is not None else (None, "min throughput")
        if hi.lat <= lo.lat * (1 + self.GAIN_TOL) or hi.c - lo.c <= 1:
            return None, (f"min throughput: concurrency {hi.c} reaches {need:g} infer/s, {lo.c} does not")
        t = (math.log(1.02 * need) - math.log(max(lo.x, 1e-6))) / max(math.log(hi.x / max(lo.x, 1e-6)), 1e-6)
        t = min(0.85, max(0.15, t))
        target = math.exp(math.log(lo.c) + t * (math.log(hi.c) - math.log(lo.c)))
        nxt = self._free(int(round(target)), pts, lo.c, hi.c)
        return (nxt, "") if nxt is not None else (None, "min throughput")

    @staticmethod
    def _elasticity(pts: list[_Pt], at: _Pt, what: str) -> float:
        """d log(latency or throughput) / d log(concurrency) from `at` and its nearest measured
        neighbour (1.0 with one point: latency in proportion to load, as when saturated)."""
        others = [p for p in pts if p.c != at.c and p.ok]
        if not others:
            return 1.0
        near = min(others, key=lambda p: (abs(math.log(p.c / at.c)), p.c))
        a, b = (getattr(at, what), getattr(near, what))
        if a <= 0 or b <= 0 or not (math.isfinite(a) and math.isfinite(b)):
            return 1.0
        beta = math.log(a / b) / math.log(at.c / near.c)
        if beta <= 0:  # falling with load: noise, not a slope
            return 1.0
        lo_b = 0.3 if what == "lat" else 0.2
        return min(1.5, max(lo_b, beta))


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


STRATEGIES = {"grid": GridStrategy, "smart": SmartStrategy}


def make_strategy(name: str, profile, candidates: list[tuple[str, CandidateSpec]]) -> Strategy:
    try:
        return STRATEGIES[name](profile, candidates)
    except KeyError:
        from tuner.errors import ProfileError

        raise ProfileError(f"unknown search strategy '{name}'; use one of {', '.join(STRATEGIES)}") from None
