"""When the smart search stops on a candidate: before measuring it, and after each of its points.

Before (`cannot_beat_any`), a candidate is skipped, with the reason, when
  * a candidate with no larger max_batch_size and no more instances failed to load (an
    engine built for a maximum batch, a device too small, refuses this one too);
  * its compute ceiling, raised by SKIP_MARGIN, cannot beat the incumbent (`ceiling.py`);
  * the model (`model.py`) predicts that no load from the lowest level to the load cap
    meets the budget (min_latency: reaches the required throughput), the model's margin
    given in its favour;
  * the model's prediction at the budget, raised by the margin, cannot beat the incumbent,
    or, for a candidate simpler than the incumbent (`confirm.simplicity`), cannot even come
    within NOISE of it: ties go to the simpler config, so a simpler one matters as long as it
    can tie, and two runs agree only if both look at it.

After a point (`hopeless`), measuring stops when
  * a point over the budget (by latency alone) serves at most GAIN_TOL more than the
    incumbent: its best load within the budget is lower and serves no more than that, so
    it could at best tie (the confirmation phase settles ties);
  * the model, re-anchored on the candidate's own points near the budget (measured /
    predicted at those loads), predicts it cannot beat the incumbent, margin included.

While a candidate is bracketed, a point over the budget by its tail alone is checked before it
is believed (`bracket.LoadSearch.suspect`); `tail_ratio` says what tail to expect of it.

The strategy is passed in (its profile, model, points); nothing here keeps state.
"""

from __future__ import annotations

from tuner.config import CandidateSpec
from tuner.search.base import BASELINE
from tuner.search.bracket import LoadPoint, median
from tuner.search.ceiling import cannot_beat
from tuner.search.confirm import NOISE, simplicity
from tuner.search.model import Prediction, unlikeness
from tuner.search.recommend import OperatingPoint

ANCHOR_SPAN = 1.5  # points within this many times the budget re-anchor the model (beyond: too far to say)


def optimistic(st, spec: CandidateSpec, pred: Prediction | None) -> float | None:
    """The prediction with the model's margin in the candidate's favour (None: no prediction)."""
    if pred is None:
        return None
    m = st.model().margin
    v = st._predicted_value(spec, pred)
    return v * (1 - m) if st.goal == "min_latency" else v * (1 + m)


def _unreachable(st, spec: CandidateSpec) -> str | None:
    """The model predicts no load can meet the constraints, even with its margin in the candidate's favour."""
    model, c = st.model(), st.c
    m = model.margin
    if st.goal == "min_latency":
        top = model.point(spec, st.cap)
        if top is not None and top.infer_per_s * (1 + m) < c.min_throughput_infer_per_s:
            return (f"model: {top.infer_per_s:.0f} infer/s predicted at the load cap ({st.cap}; {m:.0%} margin) "
                    f"cannot reach the required {c.min_throughput_infer_per_s:g} infer/s")
        return None
    low = model.point(spec, st.cmin)
    if low is not None and low.latency_ms * (1 - m) > c.latency_budget_ms:
        return (f"model: {c.latency_percentile} {low.latency_ms:.1f} ms predicted already at the lowest load "
                f"({st.cmin}; {m:.0%} margin) is over the budget of {c.latency_budget_ms:g} ms")
    return None


def cannot_beat_any(st, cid: str, inc: OperatingPoint | None) -> str | None:
    """Why the candidate need not be measured (see the module docstring); None: it might win."""
    spec = st.specs[cid]
    failed = st._failed_like(spec)
    if failed is not None:
        return failed
    why = cannot_beat(st.goal, spec, st.bound(spec), inc, st.c, st.SKIP_MARGIN)
    if why is not None or not st.model().ok:
        return why
    pred = st.predict(spec)
    if pred is None:
        return _unreachable(st, spec)
    if inc is None:
        return None
    have = _bar(st, spec, inc)
    opt = optimistic(st, spec, pred)
    if opt is not None and not st._better(opt, have) and opt != have:
        return _model_reason(st, spec, pred, inc)
    return None


def _bar(st, spec: CandidateSpec, inc: OperatingPoint) -> float:
    """What the candidate must reach to matter: the incumbent's value, or within NOISE of it for a
    simpler candidate (it would win the tie)."""
    have = st._value(inc)
    if simplicity(spec) >= simplicity(st.specs.get(inc.candidate_id)):
        return have
    return have * (1 + NOISE) if st.goal == "min_latency" else have * (1 - NOISE)


def _model_reason(st, spec: CandidateSpec, pred: Prediction, inc: OperatingPoint) -> str:
    m, pct = st.model(), st.c.latency_percentile
    unit = "ms" if st.goal == "min_latency" else "infer/s"
    per = " per instance" if st.goal == "max_throughput_per_instance" else ""
    return (f"model: {st._predicted_value(spec, pred):.1f} {unit}{per} predicted at concurrency "
            f"{pred.concurrency} ({pct} {pred.latency_ms:.1f} ms, batches of {pred.mean_batch:.1f}; from the "
            f"server's compute per batch size, queue and time outside it), {m.margin:.0%} margin included, "
            f"cannot beat the incumbent {inc.candidate_id} at {st._value(inc):.1f} {unit}{per}")


def hopeless(st, cid: str, pts: list[LoadPoint]) -> str | None:
    """The candidate's own points show it cannot beat the incumbent (another candidate's best
    point): stop measuring it (see the module docstring)."""
    if cid == BASELINE or st.goal == "min_latency":
        return None
    inc = st._incumbent()
    if inc is None or inc.candidate_id == cid:
        return None
    spec = st.specs[cid]
    have = _bar(st, spec, inc)
    tol = 1 + st.GAIN_TOL if have == st._value(inc) else 1 - st.GAIN_TOL  # a simpler one must not fall short
    per = spec.instance_count if st.goal == "max_throughput_per_instance" else 1
    over = [p for p in pts if p.other_ok and not p.within]
    if over:
        low = min(over, key=lambda p: p.concurrency)
        if low.infer_per_s / per <= have * tol:
            return (f"over the budget at concurrency {low.concurrency} with {low.infer_per_s:.0f} infer/s: "
                    f"cannot beat the incumbent {inc.candidate_id} at {have:.0f} by more than {st.GAIN_TOL:.0%}")
    model = st.model()
    pred = model.at_budget(spec) if model.ok else None
    near = [p for p in pts if p.ok and p.latency_ms <= ANCHOR_SPAN * st.c.latency_budget_ms]
    if pred is None or not near:
        return None
    ratios = sorted(p.infer_per_s / q.infer_per_s for p in near
                    if (q := model.point(spec, p.concurrency)) is not None and q.infer_per_s > 0)
    if not ratios:
        return None
    anchored = pred.infer_per_s * ratios[len(ratios) // 2] / per
    best_own = max((p.infer_per_s / per for p in pts if p.within), default=0.0)
    if max(anchored, best_own) * (1 + model.margin) < have:
        return (f"model re-anchored on its {len(near)} point(s) near the budget: {anchored:.0f} infer/s at the "
                f"budget ({model.margin:.0%} margin) cannot beat the incumbent {inc.candidate_id} at {have:.0f}")
    return None


def tail_ratio(strategy, cid: str) -> float:
    """The budget percentile / mean latency near the budget (points within it, at at least half of
    it) of the measured candidate most like `cid` (same instances, nearest max_batch_size, nearest
    queue delay): what a tail-only overshoot of `cid` is judged against while `cid` has no such
    point of its own. Queue delays and batch sizes set how wide a config's latencies spread, so an
    unbatched baseline's narrow spread would make every batched config's overshoot look like a
    stall. 1.0 before any: every such overshoot is checked."""
    budget_ms = strategy.c.latency_budget_ms
    spec = strategy.specs[cid]
    best: tuple[tuple, list[float]] | None = None
    for i, other in enumerate(strategy.order):
        ratios = [p.latency_ms / p.mean_ms for p in strategy._pts(other)
                  if p.within and p.latency_ms >= 0.5 * budget_ms and p.mean_ms > 0] if other != cid else []
        if not ratios:
            continue
        key = (unlikeness(strategy.specs[other], spec), i)
        if best is None or key < best[0]:
            best = (key, ratios)
    return min(3.0, max(1.0, median(best[1]))) if best is not None else 1.0
