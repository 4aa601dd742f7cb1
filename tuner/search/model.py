"""The search's model of a candidate it has not measured: what it would do at any load.

Built from everything measured so far:
  * compute per execution for each batch size (`costs.CostTable`, the server's
    batch statistics), per instance count and, once measured, per max_batch_size;
  * the time outside the server (`costs.overhead_ms`: latency less the server's queue
    and compute) near each load level, and the client's time per request (the spacing
    of a batch's responses);
  * a deterministic simulation of the dynamic batcher (`batcher.simulate`) that turns
    those into throughput, latency and batch sizes for a candidate at a load.

The simulation knows the batcher's rules but not the host's noise, so it is calibrated
against the measured points: each measured point is simulated too, and the ratios
measured / simulated (throughput, the budget's percentile) scale the predictions: a
measured candidate's own, for it; for the others the median throughput ratio and the
smallest tail seen (`_calibrate`). How far points stray from their candidate's ratio,
and candidates from each other, sets `margin`: the search skips a candidate only when
its prediction, raised by the margin, cannot beat what was measured (`judge.py`).

`at_budget(spec)` is the prediction that matters: the load (any integer from the
profile's lowest level up to the load cap) with the most predicted throughput whose
predicted percentile meets the budget.

Pure and deterministic: a function of the observations passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tuner.config import CandidateSpec
from tuner.results.records import Measurement
from tuner.search.batcher import SimPoint, simulate
from tuner.search.bracket import LoadPoint
from tuner.search.costs import CostTable, overhead_ms

DEFAULT_SPACING_MS = 0.1  # client time per response where the load generator did not say
DEFAULT_TAIL = 1.2        # percentile / simulated percentile before any point is measured
MIN_MARGIN, MAX_MARGIN = 0.06, 0.35
SCAN_STEP = 2 ** 0.5  # loads scanned for the best point within the budget: about two per doubling


@dataclass(frozen=True)
class Prediction:
    concurrency: int
    infer_per_s: float
    latency_ms: float   # the budget's percentile, calibrated
    mean_batch: float


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _spacing_ms(m: Measurement) -> float | None:
    cpu = sent = 0.0
    for w in m.windows:
        c = w.client or {}
        if c.get("cpu_s") is not None and c.get("sent"):
            cpu += float(c["cpu_s"])
            sent += float(c["sent"])
    return cpu / sent * 1000.0 if sent else None


def unlikeness(a: CandidateSpec, b: CandidateSpec) -> tuple:
    """How unlike two candidates are, as a sort key (smallest: most alike): other instance counts
    first, then dynamic batching on or off, then max_batch_size (ratio), then queue delay."""
    return (a.instance_count != b.instance_count, a.dynamic_batching != b.dynamic_batching,
            abs(math.log2(max(1, a.max_batch_size) / max(1, b.max_batch_size))),
            abs(a.max_queue_delay_us - b.max_queue_delay_us))


GAPS_MS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)      # per-execution backend time tried
OVERLAPS = (1.0, 0.85, 0.7, 0.55, 0.4, 0.25, 0.1)  # device sharing tried


class BatchModel:
    """Predictions for any candidate at any load (see the module docstring)."""

    def __init__(self, observed: list[tuple[CandidateSpec, Measurement, LoadPoint]], percentile: str,
                 budget_ms: float, cmin: int, cap: int, previous: "BatchModel | None" = None):
        """observed: (spec, measurement, what the search read from it), in the order measured;
        previous: the model before the latest observations (its fitted gap and overlap are kept
        while the points they were fitted on are unchanged)."""
        self.pct, self.budget_ms, self.cmin, self.cap = percentile, budget_ms, cmin, cap
        ok = [(s, m, p) for s, m, p in observed if p.ok]
        self.costs = CostTable([(s, m) for s, m, _ in ok])
        self.overheads = sorted((m.concurrency, o) for _, m, _ in ok if (o := overhead_ms(m)) is not None)
        spacings = [x for _, m, _ in ok if (x := _spacing_ms(m)) is not None]
        self.spacing_ms = _median(spacings) if spacings else DEFAULT_SPACING_MS
        self.gap_ms, self.overlap = 0.0, 1.0
        self._sims: dict[tuple, SimPoint] = {}
        self.thr_ratio, self.tail, self.margin = 1.0, DEFAULT_TAIL, MAX_MARGIN
        self.own: dict[CandidateSpec, tuple[float, float | None]] = {}  # measured: (throughput ratio, tail)
        self.fitted_on: tuple[int, int] = (0, 0)
        if self.ok:
            base = [(s, m, p) for s, m, p in ok if s.instance_count == self.costs.base]
            shared = [(s, m, p) for s, m, p in ok if s.instance_count > self.costs.base]
            self.fitted_on = (len(base), len(shared))
            if previous is not None and previous.ok and previous.fitted_on == self.fitted_on:
                self.gap_ms, self.overlap = previous.gap_ms, previous.overlap
            else:
                self.gap_ms = self._fit(base, GAPS_MS, lambda v: (v, 1.0))
                self.overlap = self._fit(shared, OVERLAPS, lambda v: (self.gap_ms, v))
            self._calibrate(ok)

    @property
    def ok(self) -> bool:
        return self.costs.ok

    def overhead_at(self, concurrency: int) -> float:
        """The time outside the server near this load: the median of the nearest measured levels."""
        if not self.overheads:
            return 0.5
        near = sorted(self.overheads, key=lambda co: (abs(math.log(co[0] / concurrency)), co[0]))[:3]
        return _median([o for _, o in near])

    def simulate(self, spec: CandidateSpec, concurrency: int, gap_ms: float | None = None,
                 overlap: float | None = None) -> SimPoint | None:
        gap_ms = self.gap_ms if gap_ms is None else gap_ms
        overlap = self.overlap if overlap is None else overlap
        key = (spec, concurrency, gap_ms, overlap)
        if key not in self._sims:
            curve = self.costs.curve(spec)
            if curve is None:
                return None
            self._sims[key] = simulate(curve.at, spec, concurrency, self.overhead_at(concurrency), self.spacing_ms,
                                       gap_ms, overlap)
        return self._sims[key]

    def _fit(self, points: list[tuple[CandidateSpec, Measurement, LoadPoint]], values, params) -> float:
        """The value whose simulation matches the points' throughput best (median |log ratio|);
        the first (no effect) when there are no points."""
        best, best_err = values[0], math.inf
        for v in values:
            gap, ov = params(v)
            errs = [abs(math.log(p.infer_per_s / sim.infer_per_s)) for s, m, p in points
                    if (sim := self.simulate(s, m.concurrency, gap, ov)) is not None and sim.infer_per_s > 0
                    and p.infer_per_s > 0]
            if not errs:
                return values[0]
            err = _median(errs)
            if err < best_err - 1e-9:
                best, best_err = v, err
        return best

    def _calibrate(self, ok: list[tuple[CandidateSpec, Measurement, LoadPoint]]) -> None:
        """Per measured candidate, the median ratios measured / simulated: throughput, and the
        budget's percentile near the budget (where it decides). A measured candidate is predicted
        with its own ratios; any other with the median throughput ratio and the smallest tail
        (as well-behaved as the best-behaved candidate seen: optimistic, so nothing is skipped on
        a tail another config had). The margin: twice the points' typical straying from their own
        candidate's ratio, plus the candidates' spread around the median."""
        thr: dict[CandidateSpec, list[float]] = {}
        tail: dict[CandidateSpec, list[float]] = {}
        for spec, m, p in ok:
            sim = self.simulate(spec, m.concurrency)
            if sim is None or sim.infer_per_s <= 0 or p.infer_per_s <= 0:
                continue
            thr.setdefault(spec, []).append(p.infer_per_s / sim.infer_per_s)
            lat, sim_lat = p.latency_ms, sim.latency_ms[self.pct]
            if math.isfinite(lat) and 0.2 * self.budget_ms <= lat <= 1.5 * self.budget_ms and sim_lat > 0:
                tail.setdefault(spec, []).append(lat / sim_lat)
        if not thr:
            return
        own_thr = {s: _median(v) for s, v in thr.items()}
        own_tail = {s: min(3.0, max(0.8, _median(v))) for s, v in tail.items()}
        self.own = {s: (own_thr[s], own_tail.get(s)) for s in own_thr}
        self.thr_ratio = _median(list(own_thr.values()))
        if own_tail:
            self.tail = min(own_tail.values())
        within = [abs(math.log(r / own_thr[s])) for s, v in thr.items() for r in v]
        across = [abs(math.log(r / self.thr_ratio)) for r in own_thr.values()]
        noise = 2.0 * _median(within) if len(within) >= 3 else MAX_MARGIN
        spread = _median(across) if len(across) >= 2 else 0.0
        self.margin = min(MAX_MARGIN, max(MIN_MARGIN, noise + spread + 0.02))

    def likely_tail(self, spec: CandidateSpec) -> float:
        """The tail of the measured candidate most like this one (same instances, then the nearest
        max_batch_size, then the nearest queue delay): where to start measuring it. Skipping uses
        the smallest tail seen (`tail`), so that a config is never dropped on another's tail."""
        own = [(s, t) for s, (_, t) in self.own.items() if t is not None]
        if not own:
            return self.tail
        return min(own, key=lambda st: (unlikeness(st[0], spec), st[0].candidate_id))[1]

    def point(self, spec: CandidateSpec, concurrency: int, likely: bool = False) -> Prediction | None:
        """likely: an unmeasured candidate takes `likely_tail`, not the smallest tail seen."""
        sim = self.simulate(spec, concurrency)
        if sim is None:
            return None
        thr, tail = self.own.get(spec, (self.thr_ratio, None))
        if tail is None:
            tail = self.likely_tail(spec) if likely else self.tail
        return Prediction(concurrency, sim.infer_per_s * thr, sim.latency_ms[self.pct] * tail, sim.mean_batch)

    def levels(self) -> list[int]:
        """Loads the predictions scan: every integer step of about sqrt(2) from the lowest level to the cap."""
        out, c = [self.cmin], float(self.cmin)
        while out[-1] < self.cap:
            c *= SCAN_STEP
            out.append(min(self.cap, max(out[-1] + 1, int(round(c)))))
        return out

    def at_budget(self, spec: CandidateSpec, likely: bool = False) -> Prediction | None:
        """The best predicted point within the budget. Latency need not grow with load: where a
        fixed cost dominates, batches fill only once enough requests wait, so a higher load can
        meet a budget a lower one misses. So loads are scanned over the whole range, then the
        best one's brackets closed by bisection towards the next load up (None: no load meets it).
        likely: with the likeliest tail (`point`), for where to start rather than what to skip."""
        levels = self.levels()
        pts = [self.point(spec, c, likely) for c in levels]
        if pts[0] is None:
            return None
        ok = [i for i, p in enumerate(pts) if p.latency_ms <= self.budget_ms]
        if not ok:
            return None
        i = max(ok, key=lambda j: (pts[j].infer_per_s, -j))
        best = pts[i]
        if i + 1 < len(levels) and pts[i + 1].latency_ms > self.budget_ms:
            lo_c, hi_c = levels[i], levels[i + 1]
            while hi_c - lo_c > 1:
                mid = min(hi_c - 1, max(lo_c + 1, int(round(math.sqrt(lo_c * hi_c)))))
                p = self.point(spec, mid, likely)
                if p.latency_ms <= self.budget_ms:
                    lo_c, best = mid, max((best, p), key=lambda q: q.infer_per_s)
                else:
                    hi_c = mid
        return best

    def at_throughput(self, spec: CandidateSpec, need_infer_per_s: float) -> Prediction | None:
        """The lowest load predicted to reach the required throughput (min_latency), None when even
        the load cap does not."""
        lo_c, hi_c = self.cmin, self.cap
        top = self.point(spec, hi_c)
        if top is None or top.infer_per_s < need_infer_per_s:
            return None
        first = self.point(spec, lo_c)
        if first.infer_per_s >= need_infer_per_s:
            return first
        best = top
        while hi_c - lo_c > 1:
            mid = min(hi_c - 1, max(lo_c + 1, int(round(math.sqrt(lo_c * hi_c)))))
            p = self.point(spec, mid)
            if p.infer_per_s >= need_infer_per_s:
                hi_c, best = mid, p
            else:
                lo_c = mid
        return best
