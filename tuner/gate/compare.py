"""`tuner compare`: is CURRENT a performance regression against BASELINE?

Both sides are read into the same form (`Dataset`, `tuner.gate.dataset`): a
run folder or results file (`results.jsonl`), or a saved baseline (`tuner
baseline save`, see `tuner.gate.baseline`). Load points are paired by (config,
concurrency), where the config is the candidate's tuned fields
(max_batch_size, dynamic batching, queue delay, preferred sizes, instances:
`CandidateSpec.candidate_id`), so a point is only compared with a point
measured under the same tuned fields. Closed-loop points only: request-rate
(open-loop) points are left out. Environments are compared first
(`tuner.results.environment.differences`): results from different
environments are refused unless `allow_env_mismatch`.

For each pair and each metric (throughput; p50, p90, p95, p99 latency) the
change is `current / baseline - 1`, with a confidence interval from a seeded
bootstrap over the stored raw data of the point's summary windows:

  * windows are resampled with replacement (drift within a run: a stall that
    hits one window of three widens the interval instead of raising an alarm);
  * throughput of a resample = its completed requests / its seconds;
  * percentiles: the resampled windows' latencies are resampled again (Poisson
    bootstrap at the real request count, each stored sample weighted by the
    requests it stands for) and read off the weighted distribution;
  * between-run noise: each side of each resample is scaled by a run factor
    exp(N(0, s)), s = `run_noise` (default 3%) for throughput and p50, and
    1.5x / 1.75x / 2x that for p90 / p95 / p99 (tails move more between runs).
  * the interval is normal on the log ratio, with the bootstrap's standard
    deviation; its z is Bonferroni-corrected over the comparison's gated
    (point, metric) tests, so `confidence` holds for the whole verdict, not
    per test (a check of 6 points x 2 metrics at 95% uses z = 2.87).

Why the run factor: measured on the 2-core development box (7-8 runs of one
config, 3 windows of 0.4-0.5 s), the spread between runs was 2-7x what a
within-run bootstrap predicts (throughput: 2% between runs for a model whose
work dominates, 5-8% for the overhead-bound default synthetic model, against
1-2.5% within a run), and a pure within-run bootstrap (`run_noise` 0) flagged
up to 36% of same-config pairs (29% for the compute-bound workload at
concurrency 1 and 8). With the defaults: compute-bound workloads, 0 false
alarms in 56 same-config pairs, a 20% slower model caught in 64 of 64 pairs;
the overhead-bound default synthetic model, 8 false alarms in 98 pairs and
77 of 106 slowdowns caught: on such a box raise `run_noise` or measure longer
(README, "Use in CI").

A metric regresses only when BOTH hold: the change is beyond its limit
(`--max-throughput-drop`, `--max-latency-rise pXX=...`) AND the interval lies
entirely on the worse side of zero (the change is significant). A percentile
is only judged when both sides have at least MIN_TAIL_SAMPLES requests beyond
it (p99: 1000 requests per point), else it is reported, not gated. A point
also regresses when it failed, or has failed requests the baseline did not.

Percentiles here are the inverted-CDF definition (the smallest latency with at
least q% of requests at or below it; `tuner.gate.percentiles`), computed on the
stored samples; every window is first reduced to evenly spaced order
statistics (at most `MAX_SAMPLES_PER_POINT` per point, `tuner.gate.dataset`),
exactly as a saved baseline stores them, so a run and its saved baseline
compare identically.
"""

from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.gate.dataset import Dataset, PointData, load_dataset
from tuner.gate.errors import CompareError, EnvironmentMismatch
from tuner.gate.percentiles import PERCENTILE_KEYS, weighted_percentiles

METRICS = ("throughput",) + PERCENTILE_KEYS
DEFAULT_RUN_NOISE = 0.03
DEFAULT_BOOTSTRAP = 2000
# A percentile is only gated when both sides have at least this many requests beyond it:
# p99 of 110 requests is their maximum, which no bootstrap can put an interval on.
MIN_TAIL_SAMPLES = 10
# Between-run noise of each metric, relative to throughput's (measured: see the module docstring).
RUN_NOISE_SCALE = {"throughput": 1.0, "p50": 1.0, "p90": 1.5, "p95": 1.75, "p99": 2.0}


def bootstrap_point(p: PointData, rng: np.random.Generator, n: int, run_noise: float) -> dict[str, np.ndarray]:
    """`n` bootstrap replicates of every metric of one point."""
    k = len(p.completed)
    mult = rng.multinomial(k, np.full(k, 1.0 / k), size=n)  # window multiplicities, n x k
    secs = mult @ p.durations_s
    thr = (mult @ p.completed.astype(np.float64)) / np.where(secs > 0, secs, np.nan)
    values, weights, win = p.pooled_samples()
    lam = mult[:, win] * weights[None, :]  # expected requests per stored sample
    counts = rng.poisson(lam).astype(np.float64)
    pct = weighted_percentiles(values, counts, [int(x[1:]) for x in PERCENTILE_KEYS]) / 1000.0
    # one run-level draw per replicate, shared by every metric (a slow run is slow
    # everywhere); tails move more between runs, so a percentile takes a multiple of it
    z = rng.normal(0.0, 1.0, size=n) if run_noise > 0 else np.zeros(n)
    out = {"throughput": thr / np.exp(z * run_noise * RUN_NOISE_SCALE["throughput"])}
    for j, key in enumerate(PERCENTILE_KEYS):
        out[key] = pct[:, j] * np.exp(z * run_noise * RUN_NOISE_SCALE[key])
    return out


@dataclass
class CompareOptions:
    max_throughput_drop: float | None = 0.05  # fraction; None: not gated
    max_latency_rise: dict[str, float] = field(default_factory=lambda: {"p99": 0.10})
    confidence: float = 0.95
    run_noise: float = DEFAULT_RUN_NOISE
    bootstrap: int = DEFAULT_BOOTSTRAP
    seed: int = 0
    allow_env_mismatch: bool = False
    familywise: bool = True  # --confidence holds for the whole comparison (Bonferroni)

    def limit(self, metric: str) -> float | None:
        if metric == "throughput":
            return self.max_throughput_drop
        return self.max_latency_rise.get(metric)

    def describe(self) -> str:
        parts = []
        if self.max_throughput_drop is not None:
            parts.append(f"throughput drop > {self.max_throughput_drop * 100:g}%")
        for k in PERCENTILE_KEYS:
            if k in self.max_latency_rise:
                parts.append(f"{k} rise > {self.max_latency_rise[k] * 100:g}%")
        return (" or ".join(parts) + f", significant at {self.confidence * 100:g}% confidence "
                f"(bootstrap {self.bootstrap}x, run noise {self.run_noise * 100:g}%, seed {self.seed})")


@dataclass
class MetricResult:
    metric: str  # "throughput" | "p50" | ...
    unit: str
    baseline: float
    current: float
    change: float  # current / baseline - 1
    ci_low: float
    ci_high: float
    limit: float | None  # allowed worsening (fraction); None: shown, not gated
    significant: bool  # the interval lies entirely on the worse side of zero
    regressed: bool
    not_gated: str = ""  # why a limited metric was not judged (too few samples)

    @property
    def worse_is_lower(self) -> bool:
        return self.metric == "throughput"


@dataclass
class PointResult:
    key: str
    label: str
    concurrency: int
    metrics: list[MetricResult]
    regressed: bool
    reasons: list[str]  # one line per regressing metric or failure
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.key} @ concurrency {self.concurrency}"


@dataclass
class Comparison:
    baseline: Dataset
    current: Dataset
    options: CompareOptions
    points: list[PointResult]
    unmatched: list[tuple[str, int, str]]  # (config key, concurrency, which side has it)
    env_mismatches: list[str]
    env_unknown: list[str]
    env_info: list[str]
    duration_s: float = 0.0
    tests: int = 0  # gated (point, metric) tests the confidence is shared by
    z: float = 0.0  # the critical value every interval uses

    @property
    def regressions(self) -> list[PointResult]:
        return [p for p in self.points if p.regressed]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def verdict(self) -> str:
        if self.regressed:
            return f"REGRESSION in {len(self.regressions)} of {len(self.points)} points"
        return f"no regression ({len(self.points)} points)"


def _seed_for(seed: int, key: str, concurrency: int) -> int:
    return (seed * 1_000_003 + zlib.crc32(f"{key}@{concurrency}".encode())) % (2**32)


def gated_metrics(options: CompareOptions) -> list[str]:
    return [m for m in METRICS if options.limit(m) is not None]


def critical_z(options: CompareOptions, tests: int) -> float:
    """z of a two-sided interval at `confidence` for the whole comparison (Bonferroni over `tests`)."""
    from statistics import NormalDist

    alpha = (1.0 - options.confidence) / max(1, tests if options.familywise else 1)
    return NormalDist().inv_cdf(1.0 - alpha / 2.0)


def signed_pct(fraction: float) -> str:
    """A change as a signed percentage, 'n/a' when there is none."""
    return "n/a" if fraction is None or not math.isfinite(fraction) else f"{fraction * 100:+.1f}%"


def compare_points(key: str, label: str, base: PointData, cur: PointData, options: CompareOptions,
                   z: float | None = None) -> PointResult:
    notes, reasons = [], []
    if not cur.ok:
        why = cur.first_error or "no request completed"
        return PointResult(key, label, cur.concurrency, [], True, [f"point failed: {why}"[:300]])
    rng = np.random.default_rng(_seed_for(options.seed, key, cur.concurrency))
    bb = bootstrap_point(base, rng, options.bootstrap, options.run_noise)
    cb = bootstrap_point(cur, rng, options.bootstrap, options.run_noise)
    est_b = {"throughput": base.throughput(), **base.percentiles_ms()}
    est_c = {"throughput": cur.throughput(), **cur.percentiles_ms()}
    z = critical_z(options, 1) if z is None else z
    metrics = []
    for m in METRICS:
        b, c = est_b[m], est_c[m]
        change = c / b - 1.0 if b > 0 else float("nan")
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.log(cb[m] / bb[m])
        logs = logs[np.isfinite(logs)]
        if logs.size > 1 and b > 0 and c > 0:
            # normal interval on the log ratio, with the bootstrap's spread: holds at the small
            # per-test alphas of a Bonferroni-corrected comparison, and a bimodal bootstrap
            # (one stalled window) widens it instead of making a tail quantile look clean
            center, sd = math.log(c / b), float(np.std(logs, ddof=1))
            lo, hi = math.exp(center - z * sd) - 1.0, math.exp(center + z * sd) - 1.0
        else:
            lo = hi = float("nan")
        limit = options.limit(m)
        not_gated = ""
        if limit is not None and m != "throughput":
            need = math.ceil(MIN_TAIL_SAMPLES / (1.0 - int(m[1:]) / 100.0))
            have = int(min(base.completed.sum(), cur.completed.sum()))
            if have < need:
                not_gated = f"{m} needs >= {need} requests per point to be judged, has {have}"
                notes.append(f"{not_gated}; measure longer (window_s) to gate it")
                limit = None
        if m == "throughput":
            significant = hi < 0
            beyond = limit is not None and change < -limit
        else:
            significant = lo > 0
            beyond = limit is not None and change > limit
        regressed = bool(beyond and significant)
        metrics.append(MetricResult(m, "infer/s" if m == "throughput" else "ms", b, c, change, lo, hi,
                                    limit, bool(significant), regressed, not_gated))
        if regressed:
            reasons.append(f"{m} {signed_pct(change)} (CI {signed_pct(lo)}..{signed_pct(hi)}), limit "
                           f"{'-' if m == 'throughput' else '+'}{limit * 100:g}%")
    if cur.errors > 0 and base.errors == 0:
        reasons.append(f"{cur.errors} failed requests (baseline had none): {cur.first_error}"[:300])
    elif cur.errors > 0:
        notes.append(f"{cur.errors} failed requests (baseline {base.errors})")
    if not base.stable or not cur.stable:
        notes.append("unstable measurement: " + ", ".join(
            s for s, d in (("baseline", base), ("current", cur)) if not d.stable))
    return PointResult(key, label, cur.concurrency, metrics, bool(reasons), reasons, notes)


def compare(baseline: Dataset, current: Dataset, options: CompareOptions | None = None) -> Comparison:
    from tuner.results.environment import differences

    options = options or CompareOptions()
    if not 0 < options.confidence < 1:
        raise CompareError(f"--confidence must be between 0 and 1 (e.g. 0.95), got {options.confidence}")
    started = time.monotonic()
    mismatches, unknown, info = differences(baseline.environment, current.environment)
    if mismatches and not options.allow_env_mismatch:
        raise EnvironmentMismatch(
            f"{baseline.source} and {current.source} were measured in different environments ("
            + "; ".join(mismatches) + "); their difference would not be a regression of the model. "
            "Re-measure the baseline in this environment, or pass --allow-env-mismatch to compare anyway")
    pairs, unmatched = [], []
    for key, bconf in baseline.configs.items():
        cconf = current.configs.get(key)
        for conc, bp in sorted(bconf.points.items()):
            cp = cconf.points.get(conc) if cconf else None
            if cp is None:
                unmatched.append((key, conc, "baseline"))
                continue
            if not bp.ok:
                unmatched.append((key, conc, "baseline failed"))
                continue
            pairs.append((key, bconf.label, bp, cp))
    tests = len(pairs) * max(1, len(gated_metrics(options)))
    z = critical_z(options, tests)
    points = [compare_points(key, label, bp, cp, options, z) for key, label, bp, cp in pairs]
    for key, cconf in current.configs.items():
        bconf = baseline.configs.get(key)
        for conc in sorted(cconf.points):
            if bconf is None or conc not in bconf.points:
                unmatched.append((key, conc, "current"))
    if not points:
        have_b = ", ".join(f"{c.key}@{sorted(c.points)}" for c in baseline.configs.values()) or "nothing"
        have_c = ", ".join(f"{c.key}@{sorted(c.points)}" for c in current.configs.values()) or "nothing"
        raise CompareError(
            f"no load point of {current.source} matches one of {baseline.source} by config and concurrency "
            f"(baseline has {have_b}; current has {have_c}); measure the same config at the baseline's "
            "load levels (`tuner check`)")
    return Comparison(baseline, current, options, points, unmatched, mismatches, unknown, info,
                      time.monotonic() - started, tests, z)


def parse_pct(text: str, what: str) -> float:
    """'5%' or '5' -> 0.05."""
    t = str(text).strip()
    if t.endswith("%"):
        t = t[:-1].strip()
    try:
        v = float(t)
    except ValueError:
        raise CompareError(f"{what} takes a percentage like 5%, got '{text}'") from None
    if not math.isfinite(v) or v < 0:
        raise CompareError(f"{what} must be a percentage >= 0, got '{text}'")
    return v / 100.0


def parse_latency_limits(items: list[str]) -> dict[str, float]:
    """['p99=10%', 'p50=5%,p95=8%'] -> {'p99': 0.1, 'p50': 0.05, 'p95': 0.08}."""
    out: dict[str, float] = {}
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            name = name.strip().lower()
            if not sep or name not in PERCENTILE_KEYS:
                raise CompareError(f"--max-latency-rise takes PERCENTILE=LIMIT with a percentile among "
                                   f"{', '.join(PERCENTILE_KEYS)}, e.g. p99=10%; got '{part}'")
            out[name] = parse_pct(value, f"--max-latency-rise {name}")
    return out


def compare_paths(baseline: Path | str, current: Path | str, options: CompareOptions | None = None) -> Comparison:
    return compare(load_dataset(baseline), load_dataset(current), options)


__all__ = ["CompareOptions", "Comparison", "MetricResult", "PointResult", "compare", "compare_paths",
           "parse_latency_limits", "parse_pct", "signed_pct"]
