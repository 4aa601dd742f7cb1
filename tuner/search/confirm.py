"""The confirmation phase's statistics: which configs to measure again, and what the rounds prove.

A search measures each load point once; on a shared host two measurements of one config
minutes apart differ by several percent, so a winner by 3% may be luck. The confirmation
phase measures the search's winner, every candidate within noise of it and the baseline
again, each at its own at-budget load (the load of its best point in the search),
interleaved: round r visits A, B, C in turn, then round r + 1 does it again. Whatever
drifts on the host in the meantime touches every config alike.

Which configs (`plan`): the winner; every candidate whose best point is within RIVAL_BAND
of it (the 95% spread of two equal configs' search points, each off by about SIGMA_PRIOR;
at most MAX_RIVALS: the next best, the simplest, then by value); and the baseline.

How many rounds (`next_round`, a sequential design within a visit budget). The first
MIN_ROUNDS rounds visit every config: a spread needs two visits of each. After each later
round the visits so far are analysed; the phase stops as soon as nothing is tied (below),
and otherwise the next round visits only the configs that can still change the answer (the
recommendation, the best, the baseline and whatever is tied with them), as long as the
round fits in the plan's visit budget (`[search] confirm_visits`) and its rounds
(`confirm_rounds`). Only the stored visits decide, so a resumed sweep stops where the first
would have. A budget, not a count of rounds, is what bounds the phase's time: a clear
winner stops after two rounds, a close call spends the budget on the two or three configs
that decide it.

How rounds become intervals (`analyse`). For config c, visit r gives throughput x_cr
(requests completed / window time). The noise model: x_cr = mu_c * (1 + e_cr), the e_cr
independent, mean zero, with one relative spread sigma for every config on this host
(the host's noise is multiplicative and shared; pooling gives the estimate degrees of
freedom that 3-6 visits of one config alone cannot). sigma is estimated from the relative
residuals x_cr / mean_c - 1 pooled over configs, df = sum(visits_c - 1), shrunk toward a
prior spread when it comes out below it: sigma^2 = (SS + PRIOR_DF * SIGMA_PRIOR^2) / (df +
PRIOR_DF), with df + PRIOR_DF degrees of freedom (the conjugate scaled inverse chi-square
prior of a normal variance); above the prior, the measured SS / df stands, so a host
noisier than the prior keeps intervals that cover (one-sided on purpose: conservative).
Two visits of each of three configs give only df = 3, and such an estimate is often a
third of the truth by luck (two visits alike): alone it made one run of a close call
confident and the next not. SIGMA_PRIOR is 3%, what two runs of one config differ by on a
shared host (TIE_MARGIN); a quiet host earns narrower intervals as its visits add degrees
of freedom (after 14 visits of two configs at 0.5% spread, about 1.5%). The 95% interval
of mu_c is mean_c +- t(0.975, df) * sigma * mean_c / sqrt(visits_c). Assumptions: visits
are independent given the config (each is a fresh model load and warm-up), the spread is
the same for every config, and means of a few visits are near normal; a drift larger than
the spread widens every interval rather than biasing one config, since every round visits
every config in it.

The budget's percentile: all of a config's latencies pooled; its interval by a bootstrap
over visits (BOOTSTRAP resamples of whole visits, seeded, so a report re-renders the
same numbers). A config is out of the budget only when even the low end of that interval
is over it; a point at the budget's edge exceeds it in about half of all re-measurements,
which says nothing against it.

The decision:
  * best: the highest mean throughput among the configs not out of the budget
    (min_latency: the lowest percentile among those reaching the required throughput);
  * tied: the others whose interval overlaps the best's, or comes within TIE_MARGIN of it
    (`Interval.ties`): a difference that small is not worth a config change, and two runs of
    one config differ by about that much (the gate's run noise, `tuner/gate/compare.py`), so a
    2% "win" shown significant by tight intervals would flip between runs;
  * if the baseline is the best or tied with it, the recommendation is to keep the current
    config: no measured gain survives the noise;
  * otherwise, among the best and its ties, those not tied with the baseline, the
    simplest is recommended (smaller queue delay, then fewer instances, then smaller
    max_batch_size, then fewer preferred sizes): a more complex config must be clearly
    better to be preferred.
  * gain_vs_baseline: the recommended config's mean throughput over the baseline's (the best
    tuned config's when the current one is kept), with the interval of ratios the two
    intervals allow, [lo_c / hi_b, hi_c / lo_b]; significant when the intervals do not tie
    (overlap, or come within TIE_MARGIN), which is exactly when the current config is not kept.

What a second run could recommend (`tied_with`). A rule applied to noisy means flips
between runs when the truth lies near its edge: with a true gain just above what the rule
calls noise, one run switches and the next keeps the current config, and no fixed margin or
count of rounds avoids it. So the run lists every config a second run could plausibly
recommend, not just those tied with the best in this run. A second run's mean of config c
differs from this run's by the sum of two errors; each error lies within c's half-width h_c
(95%), so their sum lies within sqrt(2) h_c (for independent, near-normal errors), and the
second run's interval within (1 + sqrt(2)) h_c of this run's mean (`Interval.reach`). Every
eligible config whose reach ties the best's reach is listed in `tied_with`: a second run's
recommendation is then (at about 95%) this run's or one it lists, and the other way round.
The answer is `marginal` (`marginal_with`) when a second run could land on the other side
of keep-or-switch: a switch whose baseline is listed, or a keep listing a tuned config that
a second run could find clear of the baseline (`Interval.could_clear`: the tuned interval
as high as a second run's could lie, (sqrt(2) - 1) h above this run's mean, the baseline's
as low). The report then names both and says a rerun may decide the other way; the rounds
after the first two visit only the configs that decide it, and stop once it is not
marginal. Ties among tuned configs alone spend no visits: they change which config is
listed, not whether to switch.

Measured on the simulated server (`tests/test_confirm.py`: smart search, then these rounds,
each visit 0.5-5% faster or slower as on a shared host; a surface whose best is 6-11% above
the current config, where a fixed rule flips): 90-98% of pairs of runs name the same config
or list each other's, against 47% for the tie rule alone.

Overlap of two 95% intervals is a stricter test than a 95% test of their difference (about
99% for equal widths): a change has to be clearly better to be recommended, which is the
point. The rounds stop early once the answer is not marginal; intervals after such an early
stop are a little optimistic (a lucky quiet spell stops them sooner), but only when the
decision was already clear by a margin.

Pure: made-up points in, a `Confirmation` out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from tuner.config import CandidateSpec
from tuner.results.records import ConfirmPoint
from tuner.search.recommend import Constraints, OperatingPoint, Recommendation, objective_key, objective_value

BASELINE = "baseline"
METHOD = "interleaved rounds; pooled relative spread, t interval; percentile by visit bootstrap"
NOISE = 0.05        # the search's own notion of noise: a simpler candidate this close to the incumbent is measured
TIE_MARGIN = 0.03   # intervals this close (relative) tie: the run-to-run noise of one config
MAX_RIVALS = 4      # rivals confirmed besides the winner (and the baseline): a bound on the phase's time
VISIT_BUDGET = 14   # visits in all, by default (`[search] confirm_visits`): what bounds the phase's time
MIN_ROUNDS = 2      # rounds of every config before the phase may stop: a spread needs two visits of each
REACH = 1.0 + math.sqrt(2.0)  # a second run's interval lies within this many half-widths of this run's mean
INNER = math.sqrt(2.0) - 1.0  # ... and its near end within this many, on the far side of this run's mean
SIGMA_FLOOR = 0.005  # no host measures throughput closer than this
SIGMA_PRIOR = 0.03  # the spread assumed before a visit is seen (module docstring) ...
PRIOR_DF = 4        # ... worth this many degrees of freedom
# 8.3%; 5% missed a CPU ResNet config 5.5% under a winner (55 infer/s, 51.6 once confirmed) that a second run chose
RIVAL_BAND = 1.96 * math.sqrt(2.0) * SIGMA_PRIOR
BOOTSTRAP = 400
CONFIDENCE = 0.95
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


def t975(df: int) -> float:
    """Student's t quantile 0.975 (a 95% two-sided interval)."""
    if df < 1:
        return math.inf
    return T975[df - 1] if df <= len(T975) else 1.96 + 2.4 / df


def simplicity(spec: CandidateSpec | None) -> tuple:
    """Sort key, simplest first: smaller queue delay, fewer instances, smaller max_batch_size,
    fewer preferred sizes (no dynamic batching counts as no queue delay)."""
    if spec is None:
        return (math.inf,)
    delay = spec.max_queue_delay_us if spec.dynamic_batching else 0
    return (delay, spec.instance_count, spec.max_batch_size, len(spec.preferred_batch_size), spec.candidate_id)


@dataclass(frozen=True)
class Slot:
    """A config the confirmation measures, at the load of its best point in the search."""

    candidate_id: str
    concurrency: int


def plan(rec: Recommendation, specs: dict[str, CandidateSpec]) -> list[Slot]:
    """The winner, its rivals within RIVAL_BAND of its objective (the next best and the simplest),
    each at its best point, and the baseline."""
    if rec.best is None:
        return []
    pct = rec.constraints.latency_percentile
    key = objective_key(rec.goal, pct)
    best_of: dict[str, OperatingPoint] = {}
    for p in rec.feasible:
        if p.candidate_id != BASELINE and (p.candidate_id not in best_of or key(p) > key(best_of[p.candidate_id])):
            best_of[p.candidate_id] = p
    win = rec.best
    have = objective_value(rec.goal, win, pct)
    low = rec.goal == "min_latency"
    near = [p for cid, p in best_of.items() if cid != win.candidate_id
            and (objective_value(rec.goal, p, pct) <= (1 + RIVAL_BAND) * have if low
                 else objective_value(rec.goal, p, pct) >= (1 - RIVAL_BAND) * have)]
    rivals: list[OperatingPoint] = []
    by_value = sorted(near, key=lambda p: (tuple(-x for x in key(p)), p.candidate_id))
    by_simple = sorted(near, key=lambda p: simplicity(specs.get(p.candidate_id)))
    for p in (by_value[:1] + by_simple[:1] + by_value[1:]):
        if len(rivals) < MAX_RIVALS and p not in rivals:
            rivals.append(p)
    slots = [Slot(p.candidate_id, p.concurrency) for p in [win] + rivals]
    if rec.baseline is not None and win.candidate_id != BASELINE:
        slots.append(Slot(BASELINE, rec.baseline.concurrency))
    return slots


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float
    hi: float

    def overlaps(self, other: "Interval") -> bool:
        return self.lo <= other.hi and other.lo <= self.hi

    def ties(self, other: "Interval", margin: float = TIE_MARGIN) -> bool:
        """The intervals overlap once each upper end is raised by `margin` (relative)."""
        return self.lo <= other.hi * (1.0 + margin) and other.lo <= self.hi * (1.0 + margin)

    def reach(self) -> "Interval":
        """Where a second run's interval of the same config could lie (see the module docstring)."""
        return Interval(self.mean, self.mean - REACH * (self.mean - self.lo), self.mean + REACH * (self.hi - self.mean))

    def could_clear(self, other: "Interval", lower: bool = False, margin: float = TIE_MARGIN) -> bool:
        """Whether a second run could find this config clear of `other` (no tie), above it, or
        below it when `lower` is better: this interval as far that way as a second run's could
        lie, the other's as far the other way."""
        if lower:
            far = other.mean + INNER * (other.hi - other.mean)
            return self.mean - INNER * (self.mean - self.lo) < far / (1 + margin)
        return self.mean + INNER * (self.hi - self.mean) > (other.mean - INNER * (other.mean - other.lo)) * (1 + margin)


@dataclass(frozen=True)
class ConfirmedConfig:
    candidate_id: str
    concurrency: int
    visits: int
    throughput_per_visit: tuple[float, ...]  # infer/s, in round order
    throughput: Interval                     # infer/s
    latency: Interval                        # the budget's percentile, ms (pooled; bootstrap over visits)
    budget: str                              # "met" | "edge" (over, not clearly) | "over" (clearly over)

    def to_dict(self) -> dict:
        return {"candidate_id": self.candidate_id, "concurrency": self.concurrency, "visits": self.visits,
                "throughput_per_visit": list(self.throughput_per_visit),
                "throughput_infer_per_s": self.throughput.mean,
                "throughput_ci": [self.throughput.lo, self.throughput.hi],
                "latency_ms": self.latency.mean, "latency_ci": [self.latency.lo, self.latency.hi],
                "budget": self.budget}


@dataclass(frozen=True)
class Gain:
    candidate_id: str
    ratio: float
    ci: tuple[float, float]
    significant: bool

    def to_dict(self) -> dict:
        return {"candidate_id": self.candidate_id, "ratio": self.ratio, "ci": list(self.ci),
                "significant": self.significant}


@dataclass(frozen=True)
class Confirmation:
    method: str
    rounds: int                      # rounds with every config measured
    sigma_rel: float                 # pooled relative spread of one visit's throughput
    df: int
    configs: tuple[ConfirmedConfig, ...]
    best: str | None                 # highest throughput (the goal's best) after confirmation
    recommended: str | None          # after the tie rule; "baseline" when the current config is kept
    tied_with: tuple[str, ...]       # configs a second run could recommend instead (module docstring)
    keep_current: bool
    gain: Gain | None
    reason: str
    marginal_with: tuple[str, ...] = ()  # of tied_with, those a second run could recommend on the other
                                         # side of keep-or-switch: then a rerun may flip the answer

    @property
    def marginal(self) -> bool:
        return bool(self.marginal_with)
    confidence: float = CONFIDENCE
    plan: tuple[Slot, ...] = field(default_factory=tuple)

    def config(self, cid: str) -> ConfirmedConfig | None:
        return next((c for c in self.configs if c.candidate_id == cid), None)

    def to_dict(self) -> dict:
        return {"method": self.method, "confidence": self.confidence, "rounds": self.rounds,
                "sigma_rel": self.sigma_rel, "df": self.df, "best": self.best, "recommended": self.recommended,
                "keep_current": self.keep_current, "marginal": self.marginal,
                "marginal_with": list(self.marginal_with), "reason": self.reason,
                "candidates": [c.to_dict() for c in self.configs],
                "plan": [asdict(s) for s in self.plan]}


def _visit_throughput(p: ConfirmPoint) -> float:
    span = sum(w.duration_s for w in p.point.windows)
    return sum(w.completed for w in p.point.windows) / span if span > 0 else 0.0


def _pooled_sigma(groups: list[list[float]]) -> tuple[float, int]:
    ss, df = 0.0, 0
    for xs in groups:
        if len(xs) < 2:
            continue
        m = sum(xs) / len(xs)
        if m <= 0:
            continue
        ss += sum((x / m - 1.0) ** 2 for x in xs)
        df += len(xs) - 1
    if not df:
        return math.inf, 0
    if ss / df >= SIGMA_PRIOR ** 2:  # a noisier host than the prior: its own spread, as measured
        return math.sqrt(ss / df), df
    return max(SIGMA_FLOOR, math.sqrt((ss + PRIOR_DF * SIGMA_PRIOR ** 2) / (df + PRIOR_DF))), df + PRIOR_DF


def _percentile_interval(visits: list[list[int]], pct: str, seed: int) -> Interval:
    q = float(pct.lstrip("p"))
    pooled = np.fromiter((x for v in visits for x in v), dtype=np.float64)
    if pooled.size == 0:
        return Interval(math.nan, math.nan, math.nan)
    point = float(np.percentile(pooled, q)) / 1000.0
    if len(visits) < 2:
        return Interval(point, point, point)
    # resampling whole visits: each resample weighs every sample by how often its visit was drawn
    rng = np.random.default_rng(seed)
    k = len(visits)
    vals = pooled
    labels = np.concatenate([np.full(len(v), i, dtype=np.int32) for i, v in enumerate(visits)])
    order = np.argsort(vals, kind="stable")
    vals, labels = vals[order], labels[order]
    counts = np.stack([np.bincount(rng.integers(0, k, k), minlength=k) for _ in range(BOOTSTRAP)]).astype(np.int32)
    cum = np.cumsum(counts[:, labels], axis=1)
    target = q / 100.0 * cum[:, -1]
    idx = np.minimum((cum < target[:, None]).sum(axis=1), vals.size - 1)
    stats = vals[idx] / 1000.0
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return Interval(point, float(lo), float(hi))


def _value(cfg: ConfirmedConfig, goal: str, specs: dict[str, CandidateSpec]) -> Interval:
    """The goal's number with its interval (higher is better, except for min_latency)."""
    if goal == "min_latency":
        return cfg.latency
    if goal == "max_throughput_per_instance":
        n = max(1, specs[cfg.candidate_id].instance_count) if cfg.candidate_id in specs else 1
        t = cfg.throughput
        return Interval(t.mean / n, t.lo / n, t.hi / n)
    return cfg.throughput


def _configs(points: Iterable[ConfirmPoint], order: list[str], c: Constraints) -> tuple[list[ConfirmedConfig], float, int]:
    by: dict[str, list[ConfirmPoint]] = {}
    for p in points:
        m = p.point
        if m.status == "ok" and m.windows and any(w.completed for w in m.windows):
            by.setdefault(p.candidate_id, []).append(p)
    ids = [cid for cid in order if cid in by] + sorted(cid for cid in by if cid not in order)
    visits = {cid: sorted(by[cid], key=lambda v: v.round) for cid in ids}
    xs = {cid: [_visit_throughput(v) for v in visits[cid]] for cid in ids}
    sigma, df = _pooled_sigma(list(xs.values()))
    t = t975(df)
    out = []
    for cid in ids:
        k, m = len(xs[cid]), sum(xs[cid]) / len(xs[cid])
        half = t * sigma * m / math.sqrt(k) if math.isfinite(t * sigma) else math.inf
        lat = _percentile_interval([[x for w in v.point.windows for x in w.latencies_us] for v in visits[cid]],
                                   c.latency_percentile, seed=sum(map(ord, cid)))
        budget = ("met" if lat.mean <= c.latency_budget_ms else "edge" if lat.lo <= c.latency_budget_ms else "over")
        out.append(ConfirmedConfig(cid, visits[cid][0].point.concurrency, k, tuple(xs[cid]),
                                   Interval(m, max(0.0, m - half), m + half), lat, budget))
    return out, sigma, df


def analyse(points: Iterable[ConfirmPoint], slots: list[Slot], specs: dict[str, CandidateSpec], c: Constraints,
            goal: str = "max_throughput") -> Confirmation | None:
    """What the rounds prove (the method is in the module docstring); None without a visit."""
    points = list(points)
    configs, sigma, df = _configs(points, [s.candidate_id for s in slots], c)
    if not configs:
        return None
    # the rounds after the first ones visit only the configs still in question: each counts as a round
    rounds = len({p.round for p in points if p.point.status == "ok"})
    low = goal == "min_latency"
    need = c.min_throughput_infer_per_s
    eligible = [x for x in configs if x.budget != "over" and (not low or x.throughput.hi >= need)]
    base = next((x for x in configs if x.candidate_id == BASELINE), None)
    common = dict(method=METHOD, rounds=rounds, sigma_rel=sigma, df=df, configs=tuple(configs), plan=tuple(slots))
    if not eligible:
        return Confirmation(best=None, recommended=None, tied_with=(), keep_current=False, gain=None,
                            reason="measured again, no config met the constraints", **common)
    val = {x.candidate_id: _value(x, goal, specs) for x in configs}
    best = (min if low else max)(eligible, key=lambda x: (val[x.candidate_id].mean, x.candidate_id))
    pool = [best] + [x for x in eligible if x is not best and val[x.candidate_id].ties(val[best.candidate_id])]
    keep = any(x.candidate_id == BASELINE for x in pool)
    if keep:
        chosen = base
    else:
        clear = [x for x in pool if base is None or base.budget == "over"
                 or not val[x.candidate_id].ties(val[BASELINE])]
        chosen = min(clear, key=lambda x: simplicity(specs.get(x.candidate_id)))
    far = val[best.candidate_id].reach()
    rerun = [x for x in eligible if x is not chosen and (x in pool or val[x.candidate_id].reach().ties(far))]
    rerun.sort(key=lambda x: (val[x.candidate_id].mean if low else -val[x.candidate_id].mean, x.candidate_id))
    tied = tuple(x.candidate_id for x in rerun)
    # the other side of keep-or-switch, where a second run could land: with a keep, a tuned config a
    # second run could find clear of the baseline; with a switch, the baseline a second run could tie
    if keep:
        flip = tuple(x.candidate_id for x in rerun if x.candidate_id != BASELINE
                     and val[x.candidate_id].could_clear(val[BASELINE], lower=low))
    else:
        flip = (BASELINE,) if BASELINE in tied else ()
    gain = _gain(chosen, base, configs, keep)
    return Confirmation(best=best.candidate_id, recommended=chosen.candidate_id, tied_with=tied, keep_current=keep,
                        gain=gain, marginal_with=flip,
                        reason=_reason(chosen, best, tied, keep, gain, rounds, c,
                                       next((x for x in configs if gain and x.candidate_id == gain.candidate_id),
                                            None)) + marginal_text(keep, flip), **common)


def next_round(conf: Confirmation | None, slots: list[Slot], rounds_done: int, visits_done: int,
               max_rounds: int, visit_budget: int) -> list[Slot]:
    """The configs the next round visits, in the plan's order; [] when the phase is done (the
    sequential design of the module docstring). `conf`: the analysis of the visits so far."""
    if rounds_done >= max_rounds:
        return []
    if rounds_done < MIN_ROUNDS:
        return list(slots)
    if conf is None or conf.recommended is None:
        want = {s.candidate_id for s in slots}  # nothing met the constraints yet: every config stays in question
    elif not conf.marginal:
        return []  # ties among tuned configs stay listed: more visits would not change keep-or-switch
    else:
        want = {conf.recommended, conf.best, BASELINE, *conf.marginal_with}
    nxt = [s for s in slots if s.candidate_id in want]
    return nxt if len(nxt) >= 2 and visits_done + len(nxt) <= visit_budget else []


def marginal_text(keep: bool, flip: tuple[str, ...]) -> str:
    """What a marginal answer adds to the reason (empty when it is not marginal)."""
    if not flip:
        return ""
    other = f"recommend {', '.join(flip)}" if keep else "keep the current config"
    return f"; marginal: a second run may {other} (the gain lies within what two runs differ by)"


def _gain(chosen: ConfirmedConfig, base: ConfirmedConfig | None, configs: list[ConfirmedConfig],
          keep: bool) -> Gain | None:
    if base is None or base.throughput.mean <= 0:
        return None
    tuned = chosen
    if keep:  # the best tuned config, within the budget where any is
        others = [x for x in configs if x.candidate_id != BASELINE]
        others = [x for x in others if x.budget != "over"] or others
        if not others:
            return None
        tuned = max(others, key=lambda x: (x.throughput.mean, x.candidate_id))
    t, b = tuned.throughput, base.throughput
    ci = (t.lo / b.hi if b.hi > 0 else 0.0, t.hi / b.lo if b.lo > 0 else math.inf)
    return Gain(tuned.candidate_id, t.mean / b.mean, ci, not t.ties(b))


def _reason(chosen: ConfirmedConfig, best: ConfirmedConfig, tied: tuple[str, ...], keep: bool, gain: Gain | None,
            rounds: int, c: Constraints, tuned: ConfirmedConfig | None = None) -> str:
    """`tuned`: with `keep`, the tuned config the gain compares (None: none was measured)."""
    def ci(x: ConfirmedConfig) -> str:
        return f"{x.throughput.mean:.1f} [{x.throughput.lo:.1f}, {x.throughput.hi:.1f}] infer/s"

    g = (f"{gain.ratio:.2f}x [{gain.ci[0]:.2f}, {gain.ci[1]:.2f}] the baseline" if gain is not None else "")
    head = f"confirmed over {rounds} interleaved round(s)"
    if keep:
        tail = f"; tied: {', '.join(tied)}" if tied else ""
        if tuned is None or tuned.budget == "over":
            # not a tie: the tuned configs failed the budget when measured again
            who = tuned.candidate_id if tuned is not None else "every candidate"
            return (f"{head}: keep the current config: {who} went over the {c.latency_percentile} budget of "
                    f"{c.latency_budget_ms:g} ms when measured again" + (f" ({g})" if g else "") + tail)
        if tuned.candidate_id not in tied:
            return (f"{head}: keep the current config: no candidate beat it (the best, {tuned.candidate_id}, "
                    f"gives {g})" + tail)
        return (f"{head}: keep the current config: the best candidate ({gain.candidate_id if gain else best.candidate_id}) "
                f"gives {g or 'no more than it'}: within noise (its interval of throughput does not clear the "
                f"baseline's by the {TIE_MARGIN:.0%} two runs of one config differ by)" + tail)
    out = f"{head}: {chosen.candidate_id} gives {ci(chosen)} at {c.latency_percentile} {chosen.latency.mean:.2f} ms"
    if g:
        out += f", {g}"
    if chosen is not best:
        out += f"; simplest of the configs within noise of the best ({best.candidate_id}, {ci(best)})"
    if tied:
        out += f"; tied: {', '.join(tied)}"
    return out


def final(results, profile, cap: int | None = None) -> tuple[Recommendation, Confirmation | None]:
    """The run's recommendation: the search's best, then what the confirmation rounds decided."""
    from tuner.search.base import load_cap
    from tuner.search.recommend import recommend

    c, goal = profile.constraints, profile.goal
    if cap is None and profile.search.strategy == "smart":  # grid stays on the listed levels: no cap to name
        cap = load_cap(profile.search.concurrency)
    rec = recommend(results, c, goal, cap)
    specs = {cid: r.spec for cid, r in results.candidates.items()}
    if not results.confirmation:
        return rec, None
    stored = results.confirm_plan
    slots = [Slot(cid, n) for cid, n in stored.slots] if stored is not None else plan(rec, specs)
    conf = analyse(results.confirmation, slots, specs, c, goal)
    if conf is None or conf.recommended is None:
        return rec, conf
    final_rec = recommend(results, c, goal, cap, choose=conf.recommended)
    if final_rec.best is not None:
        final_rec.reason = f"{conf.reason}; search: {final_rec.reason}"
    return final_rec, conf
