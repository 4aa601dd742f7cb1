"""The compute model: a throughput ceiling no configuration of a group can exceed.

Triton reports, per batch size, how many executions ran and how long their compute
(compute_infer) took. `ComputeFit` fits those statistics with

    compute(b) = fixed + per_item * b        (ms per execution of a batch of b)

by least squares weighted by executions, so well-sampled batch sizes count more. A
candidate with `instances` model instances and batches of b cannot serve more than

    ceiling = min(instances, cmax * req_batch / b) * b / compute(b)      (infer/s)

(batches in flight are limited by the instances and by the requests the largest load
level keeps outstanding), maximised over the batches b it can form whose compute alone
fits in the latency budget: a request in a batch waits at least the batch's compute.

Assumptions, each chosen so the ceiling stays an upper bound (optimistic, hence safe to
skip on):
  * cost is linear in batch size. Exact for a fixed + per-item cost; a cost that grows
    faster than linear at large batches makes the fit optimistic there, still safe.
  * a negative slope is noise: with no per-item cost visible, the cheapest observed
    execution bounds them all.
  * where a batch size was seen often, the lower of the fit and its observed mean is used.
  * statistics come only from candidates with no more instances than the one bounded:
    more instances share the device and only make an execution slower.
  * queueing, network and client time are ignored (they only lower throughput).
The caller adds a margin for fit error before skipping on a ceiling (`cannot_beat`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from tuner.config import CandidateSpec
from tuner.results.records import Measurement
from tuner.search.recommend import Constraints, OperatingPoint, objective_value


class ComputeFit:
    """compute_infer per execution vs batch size: `fixed + per_item * batch` (ms), fitted
    by weighted least squares on the server's own statistics (executions per batch size)."""

    MIN_EXECUTIONS = 10

    def __init__(self, obs: dict[int, tuple[int, int]]):
        """obs: batch size -> (executions, compute_infer ns summed over them)."""
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


def batch_compute_stats(measurements: Iterable[Measurement]) -> dict[int, tuple[int, int]]:
    """Batch size -> (executions, compute_infer ns), summed over the points' server statistics."""
    agg: dict[int, list[int]] = {}
    for m in measurements:
        for w in m.windows:
            if w.server is None:
                continue
            for b, (n, ns) in w.server.batch_compute_infer.items():
                acc = agg.setdefault(int(b), [0, 0])
                acc[0] += int(n)
                acc[1] += int(ns)
    return {b: (n, ns) for b, (n, ns) in agg.items()}


def throughput_bound(fit: ComputeFit, spec: CandidateSpec, budget_ms: float, max_concurrency: int) -> Bound | None:
    """The candidate's throughput ceiling and latency floor; None until the server's
    statistics show at least two batch sizes."""
    if not fit.ok:
        return None
    rb = fit.req_batch
    top = spec.max_batch_size if spec.dynamic_batching else rb
    best = Bound(0.0, rb, fit.compute_ms(rb), fit.compute_ms(rb))
    b = rb
    while b <= max(top, rb):
        comp_ms = fit.compute_ms(b)
        if comp_ms > budget_ms:
            break  # every request of such a batch waits at least its compute: over budget
        parallel = min(float(spec.instance_count), max_concurrency * rb / b)  # batches in flight
        infer_per_s = parallel * b / comp_ms * 1000.0
        if infer_per_s > best.ceiling:
            best = Bound(infer_per_s, b, comp_ms, best.latency_floor)
        b += rb
    return best


def bound_value(goal: str, spec: CandidateSpec, bd: Bound, min_throughput_infer_per_s: float) -> float:
    """The bound in the goal's unit (infer/s, per instance, or the latency floor in ms)."""
    if goal == "min_latency":
        return bd.latency_floor if bd.ceiling >= min_throughput_infer_per_s else float("inf")
    if goal == "max_throughput_per_instance":
        return bd.ceiling / spec.instance_count
    return bd.ceiling


def cannot_beat(goal: str, spec: CandidateSpec, bd: Bound | None, inc: OperatingPoint | None,
                c: Constraints, margin: float) -> str | None:
    """Why the candidate cannot beat the incumbent even with `margin` of fit error
    (None: it might)."""
    if bd is None:
        return None
    pct = c.latency_percentile
    how = (f"compute ceiling {bd.ceiling:.0f} infer/s ({spec.instance_count} instance(s) x batch "
           f"{bd.batch} / {bd.compute_ms:.2f} ms, from the server's compute statistics)")
    if goal == "min_latency":
        need = c.min_throughput_infer_per_s
        if bd.ceiling * (1 + margin) < need:
            return f"{how} cannot reach the required {need:g} infer/s"
        if inc is not None and bd.latency_floor * (1 - margin) > inc.latency_ms[pct]:
            return (f"latency floor {bd.latency_floor:.2f} ms (one execution) cannot beat the incumbent "
                    f"{inc.candidate_id} at {pct} {inc.latency_ms[pct]:.2f} ms")
        return None
    if inc is None:
        return None
    value = bound_value(goal, spec, bd, c.min_throughput_infer_per_s)
    have = objective_value(goal, inc, pct)
    if value * (1 + margin) >= have:
        return None
    unit = "infer/s per instance" if goal == "max_throughput_per_instance" else "infer/s"
    return (f"{how}{' = ' + format(value, '.0f') + ' ' + unit if unit != 'infer/s' else ''} cannot beat "
            f"the incumbent {inc.candidate_id} at {have:.0f} {unit}")
