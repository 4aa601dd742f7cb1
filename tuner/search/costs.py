"""What the server reported, as a cost model: compute time per batch size, and the time
outside the server's queue and compute.

Triton's statistics give, per batch size b, the executions of that size and their summed
compute_infer time (`ServerDelta.batch_compute_infer`). `CostTable` keeps them per
(instance count, max_batch_size) and answers `cost_ms(spec, b)`, one execution's cost:

  * from the candidate's own group (same max_batch_size and instances) where it was
    measured: a static-shape engine pads every batch to max_batch_size, so a batch of 4
    may cost what 32 do there and not elsewhere;
  * else from every candidate with the same instance count; else the nearest lower
    instance count (instances sharing a device only get slower, so the estimate stays
    optimistic until the candidate's own count is seen);
  * between observed sizes: the lower of the chord and the lines of the neighbouring
    segments (a knee between two observed sizes could sit anywhere between them: this is
    the cheapest it can be); beyond the largest along the slope of the largest observed
    sizes (a cost that steepens shows there); below the smallest, along the whole curve's
    slope (never below a cost in proportion to the batch).

The costs are read per batch size: a candidate's cost is assumed to depend on the batch
it runs, not on its max_batch_size. A measured group whose cost stays flat from small to
full batches (PADDED_FLAT) may be padding every batch to its max_batch_size; then an
unmeasured max_batch_size B is given the lower of the per-batch cost and the measured
group's full-batch cost scaled to B (in proportion: the cheapest padding can be), so it
is measured rather than skipped on costs that may not be its own.

`overhead_ms(m)` is a point's mean latency less the server's own per-request queue and
compute time: the client, the network and the server's request handling, which no
batching setting changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tuner.config import CandidateSpec
from tuner.results.records import Measurement
from tuner.results.stats import merge_server

MIN_EXECUTIONS = 5  # a batch size seen fewer times than this is not believed alone
PADDED_FLAT = 0.9   # smallest / largest batch cost at or above this, over a 4x span: maybe padded

Obs = dict[int, tuple[int, int]]  # batch size -> (executions, compute_infer ns summed)


def batch_stats(m: Measurement) -> Obs:
    """Batch size -> (executions, compute_infer ns) over a point's windows."""
    out: dict[int, list[int]] = {}
    for w in m.windows:
        if w.server is None:
            continue
        for b, (n, ns) in w.server.batch_compute_infer.items():
            acc = out.setdefault(int(b), [0, 0])
            acc[0] += int(n)
            acc[1] += int(ns)
    return {b: (n, ns) for b, (n, ns) in out.items() if n > 0}


def overhead_ms(m: Measurement) -> float | None:
    """Mean latency less the server's per-request queue + compute time (None: no statistics)."""
    used = m.windows[-m.summary_windows:] if m.summary_windows > 0 else m.windows
    delta = merge_server([w.server for w in used])
    lats = [x for w in used for x in w.latencies_us]
    if delta is None or delta.success_count <= 0 or not lats:
        return None
    server_ns = delta.queue_ns + delta.compute_input_ns + delta.compute_infer_ns + delta.compute_output_ns
    return max(0.0, sum(lats) / len(lats) / 1000.0 - server_ns / delta.success_count / 1e6)


class Curve:
    """Mean cost per execution vs batch size, from observations (see the module docstring)."""

    def __init__(self, obs: Obs, scale: float = 1.0):
        pts = sorted((b, n, ns / n / 1e6) for b, (n, ns) in obs.items() if n > 0)
        total = sum(n for _, n, _ in pts)
        # sizes seen rarely are noise unless they are all there is
        kept = [(b, n, y) for b, n, y in pts if n >= MIN_EXECUTIONS or n * 20 >= total]
        self.pts = [(b, y * scale) for b, _, y in kept]
        self.weights = [n for _, n, _ in kept]
        self.sizes = [b for b, _ in self.pts]
        self.slope = self._slope(self.pts[len(self.pts) // 2:] if len(self.pts) >= 4 else self.pts[-2:])
        self.low_slope = self._slope(self.pts)

    def __bool__(self) -> bool:
        return bool(self.pts)

    def scaled(self, factor: float) -> "Curve":
        out = Curve({})
        out.pts = [(b, y * factor) for b, y in self.pts]
        out.weights, out.sizes = list(self.weights), list(self.sizes)
        out.slope, out.low_slope = self.slope * factor, self.low_slope * factor
        return out

    @staticmethod
    def _slope(pts: list[tuple[int, float]]) -> float:
        """Least-squares slope (ms per item) through the points, never negative."""
        if len(pts) < 2:
            return 0.0
        n = len(pts)
        mx = sum(b for b, _ in pts) / n
        my = sum(y for _, y in pts) / n
        sxx = sum((b - mx) ** 2 for b, _ in pts)
        if sxx <= 0:
            return 0.0
        return max(0.0, sum((b - mx) * (y - my) for b, y in pts) / sxx)

    def at(self, b: int) -> float:
        pts = self.pts
        if b >= pts[-1][0]:
            return pts[-1][1] + self.slope * (b - pts[-1][0])
        if b <= pts[0][0]:
            # along the whole curve's slope, never below a cost in proportion to the batch
            b0, y0 = pts[0]
            return max(y0 - self.low_slope * (b0 - b), y0 * b / b0, 1e-3)
        for i, ((b0, y0), (b1, y1)) in enumerate(zip(pts, pts[1:])):
            if b0 <= b <= b1:
                chord = y0 + (y1 - y0) * (b - b0) / (b1 - b0)
                if i == 0 or i + 2 >= len(pts):
                    return chord
                # a cost that bends between two observed sizes (a knee) bends somewhere unseen: the
                # neighbouring segments' lines bound it from below, the chord from above
                (ba, ya), (bc, yc) = pts[i - 1], pts[i + 2]
                left = y0 + (y0 - ya) / (b0 - ba) * (b - b0)
                right = y1 - (yc - y1) / (bc - b1) * (b1 - b)
                return max(min(chord, max(left, right)), 1e-3)
        return pts[-1][1]  # pragma: no cover - b is within the sizes


def _merge(into: dict[int, list[int]], obs: Obs) -> None:
    for b, (n, ns) in obs.items():
        a = into.setdefault(b, [0, 0])
        a[0] += n
        a[1] += ns


class CostTable:
    """Compute per execution for any candidate and batch size, from the server's statistics."""

    def __init__(self, observed: Iterable[tuple[CandidateSpec, Measurement]]):
        groups: dict[tuple[int, int], dict[int, list[int]]] = {}
        per_count: dict[int, dict[int, list[int]]] = {}
        for spec, m in observed:
            obs = batch_stats(m)
            _merge(groups.setdefault((spec.instance_count, spec.max_batch_size if spec.dynamic_batching else 0), {}),
                   obs)
            _merge(per_count.setdefault(spec.instance_count, {}), obs)
        self.own = {k: c for k, obs in groups.items() if (c := Curve({b: tuple(v) for b, v in obs.items()}))}
        self.by_count = {k: c for k, obs in per_count.items() if (c := Curve({b: tuple(v) for b, v in obs.items()}))}
        self.base = min(self.by_count) if self.by_count else None  # the instance count costs are read at
        self._solo = self._base_curve()

    @property
    def ok(self) -> bool:
        """The costs show two batch sizes: a slope to go by."""
        return self._solo is not None and len(self._solo.pts) >= 2

    def _base_curve(self) -> Curve | None:
        """The fewest instances' costs (the least shared); with one batch size there, the shape of
        the curve with the most sizes, at that level."""
        if self.base is None:
            return None
        mine = self.by_count[self.base]
        if len(mine.pts) >= 2:
            return mine
        rich = [c for c in self.by_count.values() if len(c.pts) >= 2]
        shape = max(rich, key=lambda c: (len(c.pts), sum(c.weights)), default=None)
        if shape is None:
            return mine
        b, y = mine.pts[0]
        return shape.scaled(y / max(shape.at(b), 1e-9))

    def curve(self, spec: CandidateSpec) -> Curve | None:
        """One execution's cost by batch size for this candidate, as if its instance ran alone
        (sharing a device is the batcher simulation's `overlap`): its own max_batch_size's where
        measured at the fewest instances, else every candidate's (see PADDED_FLAT)."""
        mbs = spec.max_batch_size if spec.dynamic_batching else 0
        own = self.own.get((self.base, mbs))
        if own is not None and len(own.pts) >= 2:
            return own
        flat = [(b, c) for (k, b), c in self.own.items() if k == self.base and b > 0 and self._flat(c)]
        if not flat or self._solo is None or mbs == 0:
            return self._solo
        ref_mbs, ref = min(flat, key=lambda bc: abs(math.log(bc[0] / mbs)))
        full = ref.at(ref_mbs) * mbs / ref_mbs
        top = max(mbs, 2)
        return Curve({b: (MIN_EXECUTIONS, int(min(self._solo.at(b), full) * 1e6 * MIN_EXECUTIONS))
                      for b in range(1, top + 1)})

    @staticmethod
    def _flat(c: Curve) -> bool:
        lo, hi = c.sizes[0], c.sizes[-1]
        return len(c.pts) >= 2 and hi >= 4 * lo and c.at(lo) >= PADDED_FLAT * c.at(hi)
