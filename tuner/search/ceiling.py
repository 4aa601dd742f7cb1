"""A throughput ceiling no configuration of a group can exceed, from the server's costs.

`costs.CostTable` gives one execution's compute for a batch of b (the server's own batch
statistics). A candidate with `instances` model instances and batches of b cannot serve
more than

    ceiling = min(instances, cmax / b) * b / compute(b)      (infer/s)

(batches in flight are limited by the instances and by the requests the load cap keeps
outstanding), maximised over the batches b it can form whose compute alone fits in the
latency budget: a request in a batch waits at least the batch's compute.

It ignores queueing, network and client time (they only lower throughput), so it is
optimistic where the costs are right; the caller adds a margin for their error before
skipping on it (`cannot_beat`). The batcher simulation (`model.py`) is the finer test.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuner.config import CandidateSpec
from tuner.search.costs import Curve
from tuner.search.recommend import Constraints, OperatingPoint, objective_value


@dataclass(frozen=True)
class Bound:
    """An untried candidate's optimistic limits, from the compute fit."""

    ceiling: float        # infer/s: instances * b / compute(b), best b within the budget and the load range
    batch: int            # the b that gives it
    compute_ms: float     # compute(b)
    latency_floor: float  # ms: one execution of the smallest batch (no request can be faster)


def throughput_bound(curve: Curve | None, spec: CandidateSpec, budget_ms: float, max_concurrency: int) -> Bound | None:
    """The candidate's throughput ceiling and latency floor; None until the server's
    statistics show at least two batch sizes."""
    if curve is None or len(curve.pts) < 2:
        return None
    top = spec.max_batch_size if spec.dynamic_batching else 1
    floor_ms = curve.at(1)
    best = Bound(0.0, 1, floor_ms, floor_ms)
    for b in range(1, max(top, 1) + 1):
        comp_ms = curve.at(b)
        if comp_ms > budget_ms:
            break  # every request of such a batch waits at least its compute: over budget
        parallel = min(float(spec.instance_count), max_concurrency / b)  # batches in flight
        infer_per_s = parallel * b / comp_ms * 1000.0
        if infer_per_s > best.ceiling:
            best = Bound(infer_per_s, b, comp_ms, floor_ms)
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
