"""Refining max_batch_size beyond the listed values: where the measurements say the best lies.

The profile lists a few max_batch_size values (often powers of two); the best may lie
between two of them (a cost that jumps above a batch size that is not listed) or beyond
the largest (a large fixed cost per execution keeps paying for bigger batches). Once
every listed candidate is measured or skipped, `propose` takes the incumbent's queue
delay, preferred-size rule and instance count and predicts, with the model (`model.py`,
calibrated on what was measured), max_batch_size values not tried yet, by bisection:

  * the midpoint of every two neighbouring values tried (16 and 32: 24), all of them, not
    only the incumbent's neighbours: where the best lies depends on the batches the budget
    lets form, and a cost knee can sit anywhere;
  * beyond the largest value tried, when the incumbent's is the largest: 2x it (the usual
    spacing of listed values), up to MBS_CAP x the largest listed value: the cap is two
    proposals away, and a doubling the measurements do not bear out is bisected back by
    the midpoint rule (1.5x steps spent four refined values, 13 points, on the bench's
    overhead surface to reach 4x);
  * never above the largest value that loaded when a larger one failed to load (an
    engine built for a maximum batch refuses more; where exactly it stops is not worth
    a search).

The best prediction becomes a new candidate when it beats the incumbent's measured value
by the gain the model can resolve (MIN_GAIN, or half its margin): the measurements,
through the model, say the best lies there. Refined candidates go through the same search
as listed ones, so the next proposal bisects around them. Midpoints, not the model's
argmax over every integer, keep the values two runs try the same, so their results can
be compared (and tied).
"""

from __future__ import annotations

from tuner.config import CandidateSpec, validate_spec
from tuner.search.recommend import OperatingPoint

MBS_CAP = 4      # refinement stays within this many times the largest listed max_batch_size
MIN_GAIN = 0.03  # a refined value must be predicted at least this much better than the incumbent
GUIDE_SHARE = 0.10  # a neighbour max_batch_size this far below the incumbent does not pick the delays to try


def _preferred_for(spec: CandidateSpec, mbs: int) -> tuple[int, ...]:
    """The incumbent's preferred-size rule, applied to another max_batch_size."""
    pbs = spec.preferred_batch_size
    if not pbs:
        return ()
    if pbs == (spec.max_batch_size,):
        return (mbs,)
    if len(pbs) == 2 and pbs[1] == spec.max_batch_size and pbs[0] == spec.max_batch_size // 2:
        return (mbs // 2, mbs) if mbs // 2 >= 1 and mbs // 2 != mbs else (mbs,)
    return tuple(p for p in pbs if p <= mbs) or (mbs,)


def _same_kind(a: CandidateSpec, b: CandidateSpec) -> bool:
    return (a.dynamic_batching and b.dynamic_batching and a.max_queue_delay_us == b.max_queue_delay_us
            and a.instance_count == b.instance_count
            and _preferred_for(a, b.max_batch_size) == b.preferred_batch_size)


def candidates_between(w: CandidateSpec, tried: list[int], limit: int | None, listed_max: int) -> list[int]:
    """max_batch_size values worth predicting (see the module docstring): the midpoint of every
    two neighbouring values tried, and 2x the largest when the incumbent's is the largest."""
    b = w.max_batch_size
    values = sorted(set(tried) | {b})
    out = {(lo + hi + 1) // 2 for lo, hi in zip(values, values[1:]) if hi - lo >= 2}
    if b >= values[-1]:
        out.add(min(MBS_CAP * listed_max, 2 * b))
    if limit is not None:
        out = {x for x in out if x <= limit}
    return sorted(x for x in out if x not in tried and x >= 1)


def propose(strategy, inc: OperatingPoint) -> tuple[CandidateSpec | None, str]:
    """(a new candidate the model predicts better than the incumbent, why), or (None, "")."""
    w = strategy.specs.get(inc.candidate_id)
    if w is None or not w.dynamic_batching:
        return None, ""
    kin = [s for s in strategy.specs.values() if _same_kind(w, s)]
    tried = sorted({s.max_batch_size for s in kin})
    failed = [s.max_batch_size for s in strategy.specs.values()
              if s.candidate_id in strategy.failed and s.dynamic_batching and s.instance_count <= w.instance_count]
    loaded = [s.max_batch_size for cid, s in strategy.specs.items() if strategy.points.get(cid)
              and cid not in strategy.failed and s.dynamic_batching]
    limit = max([b for b in loaded if not failed or b < min(failed)], default=None) if failed else None
    best = _best(strategy, w, candidates_between(w, tried, limit, max(strategy.listed_mbs)))
    have = strategy._value(inc)
    if best is None or best[0] < have * (1 + max(MIN_GAIN, strategy.model().margin / 2)):
        return None, ""
    v, spec = best
    return spec, (f"max_batch_size {spec.max_batch_size} refined from the incumbent {inc.candidate_id} "
                  f"({have:.0f} infer/s): the model predicts {v:.0f}")


def _best(strategy, w: CandidateSpec, values: list[int]) -> tuple[float, CandidateSpec] | None:
    best: tuple[float, CandidateSpec] | None = None
    for mbs in values:
        spec = CandidateSpec(mbs, w.max_queue_delay_us, _preferred_for(w, mbs), w.instance_count)
        if spec.candidate_id in strategy.specs:
            continue
        validate_spec(spec, spec.candidate_id)
        pred = strategy.predict(spec)
        if pred is None:
            continue
        v = strategy._predicted_value(spec, pred)
        if best is None or v > best[0]:
            best = (v, spec)
    return best


def neighbour_settings(strategy, spec: CandidateSpec) -> set[tuple[int, tuple[int, ...]]]:
    """(queue delay, preferred sizes) that won, at `spec`'s instances, at the tried
    max_batch_size values nearest below and above `spec`'s: a refined value takes these
    besides the incumbent's settings. Every listed queue delay at every refined value would
    cost a point or two each where the delay does not matter; where it does, the winners at
    the neighbours show which delay to try in between. A neighbour whose best is more than
    GUIDE_SHARE below the incumbent is no guide: its winning delay only won among configs that
    lose, and would cost a point at every refined value."""
    inc = strategy._incumbent()
    floor = (1.0 - GUIDE_SHARE) * strategy._value(inc) if inc is not None and strategy.goal != "min_latency" else None
    rivals = [s for cid, s in strategy.specs.items() if s.dynamic_batching and s.instance_count == spec.instance_count
              and cid in strategy.points and strategy.points[cid]]
    tried = sorted({s.max_batch_size for s in rivals})
    below = [b for b in tried if b < spec.max_batch_size][-1:]
    above = [b for b in tried if b > spec.max_batch_size][:1]
    out: set[tuple[int, tuple[int, ...]]] = set()
    for mbs in below + above:
        best: tuple[float, CandidateSpec] | None = None
        for s in rivals:
            if s.max_batch_size != mbs:
                continue
            ops = [p.op for p in strategy._pts(s.candidate_id) if p.meets and p.op is not None]
            if not ops:
                continue
            v = max(strategy._value(op) if strategy.goal != "min_latency" else -strategy._value(op) for op in ops)
            if best is None or v > best[0]:
                best = (v, s)
        if best is not None and (floor is None or best[0] >= floor):
            out.add((best[1].max_queue_delay_us, _preferred_for(best[1], spec.max_batch_size)))
    return out
