"""One candidate's load level at the latency budget: bracketing and interpolation.

A batching server's throughput rises with load and flattens; its latency percentile
rises with load. The best point within a budget is the highest load whose percentile
meets it. Rather than stepping through listed levels, the search keeps two brackets,
`lo` (the highest load measured within the budget) and `hi` (the lowest above `lo` that
is not), and may pick any integer load in the profile's range:

  * nothing within yet: step down from the lowest point along its latency elasticity
    (d log latency / d log load from the nearest measured neighbour) to 95% of the budget,
    unless two points 1.5x apart in load are over it by about as much: then the latency is
    set by what a batch costs, not by the load, and less load will not meet the budget
    (a step down that finds the latency as flat goes on to 1.5x below, where this decides);
  * near saturation, `lo` serving hardly more than 1.25x less load did is a plateau:
    done, bracketed above or not; so is a `lo` whose every batch was full (max_batch_size,
    with as many requests again in flight: the instances never wait for work);
  * no bracket above: climb from `lo` along its elasticity to the budget; a percentile
    about as high at 1.5x less load is set by the batches' cost (a padded engine), so the
    climb takes its largest step (the elasticity's floor would creep up a few percent a
    point);
  * bracketed: interpolate log latency vs log load to 98% of the budget (or `lo`'s own
    slope, whichever reaches further, when `hi`'s excess is in its tail: one stalled window
    can make its percentile many times the budget), kept within 15..85% of the interval so
    the brackets shrink,
    and bisected once two points above `lo` are over the budget (an interpolation that
    keeps landing just under `hi` would otherwise shrink the interval by 15% a point).

No step moves the load by more than MAX_STEP x. The candidate is done when at most
GAIN_TOL more throughput can lie between `lo` and `hi` (throughput does not fall as load
grows, so `hi`'s bounds what lies between), at the range's top, within GAIN_TOL of the
compute ceiling, or on a plateau. A point over the budget by its tail alone (mean latency
well within) is checked once at a nearby load before it is believed: a one-off stall on a
busy host looks like that (below it while nothing is within the budget yet); unless it
serves no more than a lower load within the budget (saturated): believed or not, the
candidate's best is then that lower load's.

min_latency searches the other axis: the lowest load whose throughput reaches the
required throughput, along the throughput elasticity.

Pure: the next level is a function of the points passed in.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from tuner.results.records import Measurement
from tuner.search.costs import batch_stats
from tuner.search.recommend import Constraints, OperatingPoint, meets

Level = tuple[int | None, str]  # (the next load level, or None and why the candidate is done)
FLAT_SPAN, FLAT_RATIO = 1.5, 1.1  # latency within 10% over 1.5x the load: it does not follow the load


@dataclass(frozen=True)
class LoadPoint:
    """What the load search reads from one measured point."""

    concurrency: int
    ok: bool              # status ok and requests completed
    infer_per_s: float
    latency_ms: float     # the budget's percentile (inf when none)
    mean_ms: float        # mean latency (inf when none)
    within: bool          # latency budget, error rate and GPU memory met (what load can break)
    other_ok: bool        # error rate and GPU memory met (when not within: latency alone broke it)
    meets: bool           # every constraint (min throughput included): counts for the incumbent
    op: OperatingPoint | None
    # every batch the server ran held max_batch_size (>= 2) requests while as many again were in
    # flight: an instance never waits for work, so more load adds queueing, not throughput
    full: bool = False


FULL_SHARE = 0.97  # a mean executed batch this close to max_batch_size is full (one short batch in a window is not)


def _full_batches(m: Measurement, instances: int, max_batch: int) -> bool:
    if max_batch < 2 or m.concurrency < 2 * max_batch * instances:
        return False
    runs = batch_stats(m)  # every window, as the cost model reads them
    count = sum(n for n, _ns in runs.values())
    return count > 0 and sum(b * n for b, (n, _ns) in runs.items()) / count >= FULL_SHARE * max_batch


def read_point(m: Measurement, instances: int, c: Constraints, max_batch: int = 0) -> LoadPoint:
    """max_batch: the candidate's largest batch (0: none formed, no dynamic batching)."""
    op = None
    ok = m.status == "ok" and bool(m.windows)
    x, lat, mean, within, other_ok, meets_all = 0.0, float("inf"), float("inf"), False, False, False
    if ok:
        op = OperatingPoint.of(m, instances)
        s = m.summary()
        ok = s.completed > 0
        x = op.throughput_infer_per_s
        lat = op.latency_ms[c.latency_percentile]
        lat = lat if lat == lat else float("inf")  # NaN: no latency to judge, treat as over any budget
        mean = s.latency_ms.get("mean", lat)
        mean = mean if mean == mean else float("inf")
        total = s.completed + s.errors
        other_ok = (ok and total > 0 and s.errors / total <= c.max_error_rate
                    and not (c.max_gpu_memory_mb is not None and op.gpu_memory_mb is not None
                             and op.gpu_memory_mb > c.max_gpu_memory_mb))
        within = other_ok and lat <= c.latency_budget_ms
        meets_all = ok and meets(op, m, c)
    return LoadPoint(m.concurrency, ok, x, lat, mean, within, other_ok, meets_all, op,
                     ok and _full_batches(m, instances, max_batch))


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2.0


def elasticity(pts: list[LoadPoint], at: LoadPoint, what: str) -> float:
    """d log(latency_ms or infer_per_s) / d log(concurrency) from `at` and its nearest measured
    neighbour (1.0 with one point: latency in proportion to load, as when saturated)."""
    others = [p for p in pts if p.concurrency != at.concurrency and p.ok]
    if not others:
        return 1.0
    near = min(others, key=lambda p: (abs(math.log(p.concurrency / at.concurrency)), p.concurrency))
    a, b = (getattr(at, what), getattr(near, what))
    if a <= 0 or b <= 0 or not (math.isfinite(a) and math.isfinite(b)):
        return 1.0
    beta = math.log(a / b) / math.log(at.concurrency / near.concurrency)
    if beta <= 0:  # falling with load: noise, not a slope
        return 1.0
    lo_beta = 0.3 if what == "latency_ms" else 0.2
    return min(1.5, max(lo_beta, beta))


STALL_TAIL = 1.5  # a percentile / mean ratio this many times lo's: hi's excess is a stall's tail


def _tail_inflated(hi: LoadPoint, lo: LoadPoint) -> bool:
    """hi's percentile stands further above its mean than lo's does by STALL_TAIL (or its
    percentile is not finite): what one stalled window does, unlike more load."""
    if not math.isfinite(hi.latency_ms) or hi.mean_ms <= 0 or lo.mean_ms <= 0:
        return True
    return hi.latency_ms / hi.mean_ms > STALL_TAIL * (lo.latency_ms / lo.mean_ms)


def _log_between(lo_c: int, hi_c: int, t: float) -> float:
    return math.exp(math.log(lo_c) + t * (math.log(hi_c) - math.log(lo_c)))


class LoadSearch:
    """The next load level of one candidate, within [cmin, cmax], from its points so far."""

    def __init__(self, c: Constraints, cmin: int, cmax: int, plateau_pct: float, gain_tol: float,
                 max_step: float, cap_note: str = "the range's top"):
        self.c = c
        self.cap_note = cap_note  # what cmax is, in words
        self.cmin, self.cmax = cmin, cmax
        self.plateau = plateau_pct / 100.0
        self.gain_tol = gain_tol  # done when at most this much throughput is left between the brackets
        self.max_step = max_step  # the most the load changes in one extrapolated step

    def clamp(self, c: float) -> int:
        return int(min(self.cmax, max(self.cmin, round(c))))

    def free(self, c: int, pts: list[LoadPoint], lo: int, hi: int) -> int | None:
        """An unmeasured level near c strictly between lo and hi (None: none left)."""
        taken = {p.concurrency for p in pts}
        c = min(hi - 1, max(lo + 1, c))
        for d in range(hi - lo):
            for cand in (c + d, c - d):
                if lo < cand < hi and cand not in taken:
                    return cand
        return None

    def suspect(self, pts: list[LoadPoint], run_tail_ratio: Callable[[], float]) -> LoadPoint | None:
        """A point over the budget by its tail alone: its mean latency, times the percentile /
        mean ratio the candidate (else the run) shows near the budget, is well within. A one-off
        stall on a noisy host looks like this; the candidate's first such point is checked at a
        nearby load, not believed."""
        budget_ms = self.c.latency_budget_ms
        own = [p.latency_ms / p.mean_ms for p in pts
               if p.within and p.latency_ms >= 0.5 * budget_ms and p.mean_ms > 0]
        ratio = min(3.0, max(1.0, median(own))) if own else run_tail_ratio()  # its own tail first
        odd = [p for p in pts if p.ok and p.other_ok and p.latency_ms > budget_ms
               and p.mean_ms * ratio <= 0.9 * budget_ms]
        return odd[0] if len(odd) == 1 else None

    def no_better_than(self, v: LoadPoint, ref: LoadPoint, ref_id: str) -> str | None:
        """Why a variant's first point, taken at the load level of its group's reference `ref`,
        is clearly worse (2 x gain_tol less throughput and no lower percentile, or over the
        budget without more throughput); None: it is not."""
        if not ref.within:
            return None
        # "clearly worse" only: two measurements of one config differ by a few percent on a busy host
        if v.within and (v.infer_per_s >= ref.infer_per_s * (1 - 2 * self.gain_tol)
                         or v.latency_ms < ref.latency_ms * (1 - self.gain_tol)):
            return None
        if not v.within and v.infer_per_s > ref.infer_per_s * (1 + self.gain_tol):
            return None
        pct = self.c.latency_percentile
        return (f"no better than {ref_id} at concurrency {v.concurrency}: {v.infer_per_s:.0f} vs "
                f"{ref.infer_per_s:.0f} infer/s, {pct} {v.latency_ms:.2f} vs {ref.latency_ms:.2f} ms")

    # -- max throughput (and per instance): the highest load within the budget --
    def for_budget(self, pts: list[LoadPoint], ceiling_infer_per_s: float | None,
                   run_tail_ratio: Callable[[], float]) -> Level:
        """ceiling_infer_per_s: the candidate's compute ceiling (None: unknown yet);
        run_tail_ratio: the run's percentile / mean latency ratio near the budget."""
        every = pts
        odd = self.suspect(pts, run_tail_ratio)
        below = [p.infer_per_s for p in pts if p.within and odd is not None and p.concurrency < odd.concurrency]
        if below and odd.infer_per_s <= (1 + self.gain_tol) * max(below):
            odd = None  # believed or not, it serves no more than a lower load within: checking decides nothing
        if odd is not None:
            pts = [p for p in pts if p is not odd]
            if not any(p.within for p in pts):
                # nothing within yet: check below it (stepping down from the points above would
                # land next to it again, where it most likely overshoots as well)
                nxt = self.free(math.floor(odd.concurrency * 0.9), every, self.cmin - 1, odd.concurrency)
                if nxt is not None:
                    return nxt, ""
                pts = every
        inside = [p for p in pts if p.within]
        lo = max(inside, key=lambda p: p.concurrency, default=None)
        above = [p for p in pts if not p.within and (lo is None or p.concurrency > lo.concurrency)]
        hi = min(above, key=lambda p: p.concurrency, default=None)
        if lo is None:
            return self._step_down(pts, every)
        # a cheap victory: the load range's top meets the budget
        if hi is None and lo.concurrency >= self.cmax:
            return None, f"max_load: {self.cap_note} ({self.cmax}) meets the budget"
        if ceiling_infer_per_s is not None and lo.infer_per_s >= (1 - self.gain_tol) * ceiling_infer_per_s:
            return None, (f"ceiling: {lo.infer_per_s:.0f} infer/s at concurrency {lo.concurrency} is within "
                          f"{self.gain_tol:.0%} of the compute ceiling")
        if lo.full:
            return None, (f"saturated: every batch at concurrency {lo.concurrency} was full ({lo.infer_per_s:.0f} "
                          f"infer/s): more load only queues")
        flat = self._plateau(inside, lo, ceiling_infer_per_s)
        if flat is not None:
            return None, flat
        if hi is None:
            return self._climb(pts, every, inside, lo)
        return self._between(pts, every, lo, hi)

    def _plateau(self, inside: list[LoadPoint], lo: LoadPoint, ceiling_infer_per_s: float | None) -> str | None:
        """Near saturation, lo serves hardly more than 1.25x less load did: more load adds queueing,
        not throughput, whether or not a point above lo brackets it (an interpolation towards hi
        would only measure the plateau again)."""
        prev = max((p for p in inside if p.concurrency <= lo.concurrency / 1.25), key=lambda p: p.concurrency,
                   default=None)
        saturated = (ceiling_infer_per_s is None or lo.infer_per_s >= 0.75 * ceiling_infer_per_s
                     or lo.latency_ms >= 0.75 * self.c.latency_budget_ms)
        if (prev is not None and saturated
                and lo.infer_per_s < prev.infer_per_s * (1 + max(self.plateau, self.gain_tol))):
            return (f"plateau: {lo.infer_per_s:.0f} infer/s at concurrency {lo.concurrency} vs "
                    f"{prev.infer_per_s:.0f} at {prev.concurrency}")
        return None

    def _step_down(self, pts: list[LoadPoint], every: list[LoadPoint]) -> Level:
        """Nothing within the budget yet: lower the load from the lowest point."""
        budget_ms = self.c.latency_budget_ms
        low = pts[0]
        if low.concurrency <= self.cmin:
            return None, (f"budget: {self.c.latency_percentile} {low.latency_ms:.2f} ms > {budget_ms:g} ms "
                          f"at the lowest load ({low.concurrency})")
        flat = self._flat_latency(pts, low)
        if flat is not None:
            return None, flat
        if low.latency_ms <= budget_ms:  # errors or memory, not latency: halve the load
            target = low.concurrency / 2.0
        else:
            beta = elasticity(pts, low, "latency_ms")
            target = low.concurrency * (0.95 * budget_ms / low.latency_ms) ** (1.0 / beta)
            # over the budget and hardly lower than at a higher load nearby: step to where the
            # flat test can decide (FLAT_SPAN below that load); small steps along a latency that
            # does not follow the load each land over the budget again
            flat_so_far = [p.concurrency for p in pts if p.ok and p.concurrency > low.concurrency
                           and budget_ms < p.latency_ms <= FLAT_RATIO * low.latency_ms]
            if flat_so_far:
                target = min(target, max(flat_so_far) / FLAT_SPAN)
        target = max(target, low.concurrency / self.max_step)
        nxt = self.free(min(low.concurrency - 1, max(self.cmin, math.floor(target))), every, self.cmin - 1,
                        low.concurrency)
        return (nxt, "") if nxt is not None else (None, "budget")

    def _flat_latency(self, pts: list[LoadPoint], low: LoadPoint) -> str | None:
        """Over the budget at two loads FLAT_SPAN apart with the percentile hardly lower at the lower
        one: latency is set by the batches' cost, not by the load, so less load will not meet it."""
        if low.latency_ms <= self.c.latency_budget_ms:
            return None
        above = [p for p in pts if p.ok and p.concurrency >= FLAT_SPAN * low.concurrency
                 and p.latency_ms > self.c.latency_budget_ms]
        far = min(above, key=lambda p: p.concurrency, default=None)
        if far is None or far.latency_ms > FLAT_RATIO * low.latency_ms:
            return None
        pct = self.c.latency_percentile
        return (f"budget: {pct} {low.latency_ms:.2f} ms at concurrency {low.concurrency}, {far.latency_ms:.2f} ms at "
                f"{far.concurrency}: latency does not fall with load, so less load will not meet the budget")

    def _climb(self, pts: list[LoadPoint], every: list[LoadPoint], inside: list[LoadPoint], lo: LoadPoint) -> Level:
        """Within the budget so far, nothing above it: raise the load towards the budget."""
        budget_ms = self.c.latency_budget_ms
        beta = elasticity(pts, lo, "latency_ms")
        target = lo.concurrency * (budget_ms / max(lo.latency_ms, 1e-6)) ** (1.0 / beta)
        if target <= lo.concurrency * (1 + self.gain_tol):
            # throughput grows at most in proportion to load (latency does not fall with it)
            return None, (f"budget: {self.c.latency_percentile} {lo.latency_ms:.2f} ms at concurrency "
                          f"{lo.concurrency}; at most {self.gain_tol:.0%} more load fits")
        # within the budget and hardly higher than at FLAT_SPAN less load: latency is set by the
        # batches' cost, not by the load (a padded engine), so the slope's floor would creep up in
        # steps of a few percent until MAX_POINTS; take the largest step instead and bracket
        if any(p.concurrency * FLAT_SPAN <= lo.concurrency and lo.latency_ms <= FLAT_RATIO * p.latency_ms
               for p in inside):
            target = max(target, lo.concurrency * self.max_step)
        target = min(target, lo.concurrency * self.max_step)
        nxt = self.free(max(lo.concurrency + 1, math.ceil(target)), every, lo.concurrency, self.cmax + 1)
        return (nxt, "") if nxt is not None else (None, "max_load")

    def _between(self, pts: list[LoadPoint], every: list[LoadPoint], lo: LoadPoint, hi: LoadPoint) -> Level:
        """Bracketed: lo meets the budget, hi does not."""
        budget_ms = self.c.latency_budget_ms
        pct = self.c.latency_percentile
        # hi's throughput bounds what lies between (throughput does not fall as load grows);
        # one below lo's is noise and bounds nothing, two well below are not: batches past a
        # cost knee or a padded size can make more load serve less
        falling = [p for p in pts if p.concurrency > lo.concurrency and p.ok
                   and p.infer_per_s < (1 - 3 * self.gain_tol) * lo.infer_per_s]
        if len(falling) >= 2:
            return None, (f"budget: throughput falls above concurrency {lo.concurrency} ({lo.infer_per_s:.0f} "
                          f"infer/s there, {max(p.infer_per_s for p in falling):.0f} at most above)")
        if (1 + self.gain_tol) * lo.infer_per_s >= hi.infer_per_s >= (1 - 3 * self.gain_tol) * lo.infer_per_s:
            # hi serves about what lo does (saturated: a little less is noise): nothing to gain between
            return None, (f"budget: concurrency {lo.concurrency} meets it ({pct} {lo.latency_ms:.2f} ms), "
                          f"{hi.concurrency} does not and serves no more ({hi.infer_per_s:.0f} vs "
                          f"{lo.infer_per_s:.0f} infer/s)")
        if hi.infer_per_s >= lo.infer_per_s >= (1 - self.gain_tol) * hi.infer_per_s:
            return None, (f"budget: concurrency {lo.concurrency} meets it ({pct} {lo.latency_ms:.2f} ms), "
                          f"{hi.concurrency} does not ({hi.latency_ms:.2f} ms); at most {self.gain_tol:.0%} "
                          f"more throughput between")
        if hi.concurrency - lo.concurrency <= 1:
            return None, f"budget: concurrency {lo.concurrency} meets it, {hi.concurrency} does not"
        if lo.latency_ms > 0 and hi.latency_ms > lo.latency_ms and math.isfinite(hi.latency_ms):
            t = ((math.log(0.98 * budget_ms) - math.log(lo.latency_ms))
                 / (math.log(hi.latency_ms) - math.log(lo.latency_ms)))
        else:
            t = 0.5
        # ... or lo's own slope, whichever reaches further, when hi's excess is in its tail: one
        # stalled window can make hi's percentile many times the budget and drag the interpolation
        # down to lo. Not otherwise: lo's slope from a nearby point is mostly noise, and taken at
        # its floor it sent the next point next to hi
        if _tail_inflated(hi, lo):
            beta = elasticity([p for p in pts if p.concurrency <= lo.concurrency], lo, "latency_ms")
            t = max(t, math.log(0.98 * budget_ms / max(lo.latency_ms, 1e-6)) / beta
                    / math.log(hi.concurrency / lo.concurrency))
        target = _log_between(lo.concurrency, hi.concurrency, min(1.0, max(0.0, t)))
        if target <= lo.concurrency * (1 + self.gain_tol):
            return None, (f"budget: concurrency {lo.concurrency} meets it ({pct} {lo.latency_ms:.2f} ms), "
                          f"{hi.concurrency} does not ({hi.latency_ms:.2f} ms); at most {self.gain_tol:.0%} "
                          f"more load fits")
        # never at the brackets' edge: each step must shrink the interval noticeably; once two
        # points lie over the budget above lo, the interpolation has missed once: bisect, since
        # it keeps landing just under hi where latency bends up near the budget (15% a point)
        if sum(1 for p in pts if p.concurrency > lo.concurrency and not p.within) >= 2:
            t = min(t, 0.5)
        target = _log_between(lo.concurrency, hi.concurrency, min(0.85, max(0.15, t)))
        nxt = self.free(round(target), every, lo.concurrency, hi.concurrency)
        if nxt is None:
            return None, f"budget: between concurrency {lo.concurrency} and {hi.concurrency}"
        return nxt, ""

    # -- min latency: the lowest load reaching the required throughput --
    def for_throughput(self, pts: list[LoadPoint]) -> Level:
        c = self.c
        need = c.min_throughput_infer_per_s
        enough = [p for p in pts if p.infer_per_s >= need]
        hi = min(enough, key=lambda p: p.concurrency, default=None)
        below = [p for p in pts if p.infer_per_s < need and (hi is None or p.concurrency < hi.concurrency)]
        lo = max(below, key=lambda p: p.concurrency, default=None)
        if hi is not None and not hi.within:
            return None, (f"budget: {c.latency_percentile} {hi.latency_ms:.2f} ms > {c.latency_budget_ms:g} ms "
                          f"at the lowest load reaching {need:g} infer/s ({hi.concurrency})")
        if hi is None:
            top = lo
            if top.concurrency >= self.cmax:
                return None, (f"min throughput: {top.infer_per_s:.0f} < {need:g} infer/s at the range's top "
                              f"({top.concurrency})")
            if not top.within:
                return None, f"budget: over it at concurrency {top.concurrency} before reaching {need:g} infer/s"
            beta = elasticity(pts, top, "infer_per_s")
            target = min(top.concurrency * (1.03 * need / max(top.infer_per_s, 1e-6)) ** (1.0 / beta),
                         top.concurrency * self.max_step)
            nxt = self.free(max(top.concurrency + 1, math.ceil(target)), pts, top.concurrency, self.cmax + 1)
            return (nxt, "") if nxt is not None else (None, "max_load")
        if lo is None:
            if hi.concurrency <= self.cmin:
                return None, f"lowest load ({hi.concurrency}) reaches {need:g} infer/s"
            beta = elasticity(pts, hi, "infer_per_s")
            target = max(hi.concurrency * (1.03 * need / hi.infer_per_s) ** (1.0 / beta),
                         hi.concurrency / self.max_step)
            nxt = self.free(min(hi.concurrency - 1, math.floor(target)), pts, self.cmin - 1, hi.concurrency)
            return (nxt, "") if nxt is not None else (None, "min throughput")
        if hi.latency_ms <= lo.latency_ms * (1 + self.gain_tol) or hi.concurrency - lo.concurrency <= 1:
            return None, f"min throughput: concurrency {hi.concurrency} reaches {need:g} infer/s, {lo.concurrency} does not"
        t = ((math.log(1.02 * need) - math.log(max(lo.infer_per_s, 1e-6)))
             / max(math.log(hi.infer_per_s / max(lo.infer_per_s, 1e-6)), 1e-6))
        target = _log_between(lo.concurrency, hi.concurrency, min(0.85, max(0.15, t)))
        nxt = self.free(round(target), pts, lo.concurrency, hi.concurrency)
        return (nxt, "") if nxt is not None else (None, "min throughput")

    # -- the winner's latency curve at part load --
    def curve_level(self, pts: list[LoadPoint], top: LoadPoint, share: float) -> int | None:
        """A load where `share` of top's throughput is expected, below top (None: the curve
        already has a point near that share, or no level is left)."""
        if any(p.infer_per_s <= (share + 0.1) * top.infer_per_s for p in pts if p.concurrency < top.concurrency):
            return None
        below = [p for p in pts if p.concurrency < top.concurrency]
        if below:  # throughput vs load so far: aim along it
            low = min(below, key=lambda p: p.concurrency)
            frac = (share * top.infer_per_s - low.infer_per_s) / max(top.infer_per_s - low.infer_per_s, 1e-9)
            if share * top.infer_per_s > low.infer_per_s:
                target = low.concurrency * (top.concurrency / low.concurrency) ** min(1.0, max(0.0, frac))
            else:
                target = low.concurrency * share * top.infer_per_s / max(low.infer_per_s, 1e-9)
        else:
            target = top.concurrency * share * 0.5  # a batching server is well above proportional at part load
        return self.free(math.floor(target), pts, self.cmin - 1, top.concurrency)
