"""`tuner compare`: is CURRENT a performance regression against BASELINE?

Both sides are read into the same form (`Dataset`): a run folder or results
file (`results.jsonl`), or a saved baseline (`tuner baseline save`, see
`tuner.baseline`). Load points are paired by (config, concurrency), where the
config is the candidate's tuned fields (max_batch_size, dynamic batching,
queue delay, preferred sizes, instances: `CandidateSpec.candidate_id`), so a
point is only compared with a point measured under the same tuned fields.
Closed-loop points only: request-rate (open-loop) points are left out.
Environments are compared first (`tuner.environment.differences`): results
from different environments are refused unless `allow_env_mismatch`.

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
least q% of requests at or below it), computed on the stored samples; every
window is first reduced to evenly spaced order statistics (at most
`MAX_SAMPLES_PER_POINT` per point), exactly as a saved baseline stores them, so
a run and its saved baseline compare identically.
"""

from __future__ import annotations

import json
import math
import time
import xml.etree.ElementTree as ET
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tuner.errors import StoreError
from tuner.results.store import Measurement, RESULTS_FILE, load_results, write_atomic

PERCENTILE_KEYS = ("p50", "p90", "p95", "p99")
METRICS = ("throughput",) + PERCENTILE_KEYS
MAX_SAMPLES_PER_POINT = 1000
DEFAULT_RUN_NOISE = 0.03
DEFAULT_BOOTSTRAP = 2000
# A percentile is only gated when both sides have at least this many requests beyond it:
# p99 of 110 requests is their maximum, which no bootstrap can put an interval on.
MIN_TAIL_SAMPLES = 10
# Between-run noise of each metric, relative to throughput's (measured: see the module docstring).
RUN_NOISE_SCALE = {"throughput": 1.0, "p50": 1.0, "p90": 1.5, "p95": 1.75, "p99": 2.0}


class CompareError(StoreError):
    """Results that cannot be compared (nothing in common, unreadable, ...): exit 2."""


class EnvironmentMismatch(CompareError):
    """BASELINE and CURRENT were measured in different environments."""


# ------------------------------------------------------------------ data ---

@dataclass
class PointData:
    """One load point's summary windows, reduced to what comparing needs."""

    concurrency: int
    durations_s: np.ndarray  # per window
    completed: np.ndarray  # per window, exact request counts
    latencies_us: list[np.ndarray]  # per window, sorted, evenly spaced order statistics
    errors: int = 0
    status: str = "ok"
    stable: bool = True
    first_error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok" and len(self.completed) > 0 and int(self.completed.sum()) > 0

    def throughput(self) -> float:
        d = float(self.durations_s.sum())
        return float(self.completed.sum()) / d if d > 0 else float("nan")

    def percentiles_ms(self) -> dict[str, float]:
        values, weights, _ = self._pooled()
        q = weighted_percentiles(values, weights[None, :], [int(k[1:]) for k in PERCENTILE_KEYS])[0]
        return {k: float(v) / 1000.0 for k, v in zip(PERCENTILE_KEYS, q)}

    def _pooled(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(values, weight per value = real requests it stands for, window index), sorted by value."""
        vals, wts, win = [], [], []
        for i, lat in enumerate(self.latencies_us):
            if len(lat) == 0:
                continue
            vals.append(lat.astype(np.float64))
            wts.append(np.full(len(lat), float(self.completed[i]) / len(lat)))
            win.append(np.full(len(lat), i))
        if not vals:
            return np.zeros(0), np.zeros(0), np.zeros(0, dtype=int)
        v, w, k = np.concatenate(vals), np.concatenate(wts), np.concatenate(win)
        order = np.argsort(v, kind="stable")
        return v[order], w[order], k[order]

    def to_dict(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "status": self.status,
            "stable": self.stable,
            "errors": self.errors,
            "first_error": self.first_error,
            "windows": [
                {"duration_s": float(d), "completed": int(c), "latencies_us": [int(x) for x in lat]}
                for d, c, lat in zip(self.durations_s, self.completed, self.latencies_us)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "PointData":
        ws = d.get("windows", [])
        return cls(
            concurrency=int(d["concurrency"]),
            durations_s=np.array([float(w["duration_s"]) for w in ws], dtype=np.float64),
            completed=np.array([int(w["completed"]) for w in ws], dtype=np.int64),
            latencies_us=[np.sort(np.asarray(w.get("latencies_us", []), dtype=np.int64)) for w in ws],
            errors=int(d.get("errors", 0)),
            status=str(d.get("status", "ok")),
            stable=bool(d.get("stable", True)),
            first_error=str(d.get("first_error", "")),
        )


def order_statistics(values, k: int) -> np.ndarray:
    """`k` evenly spaced order statistics of `values` (min and max kept), sorted."""
    v = np.sort(np.asarray(values, dtype=np.int64))
    if k >= len(v):
        return v
    if k <= 1:
        return v[len(v) // 2:len(v) // 2 + 1]
    return v[np.round(np.linspace(0, len(v) - 1, k)).astype(int)]


def point_from_measurement(m: Measurement, max_samples: int = MAX_SAMPLES_PER_POINT) -> PointData:
    """A stored point's summary windows, each reduced to at most its share of `max_samples`."""
    used = m.windows[-m.summary_windows:] if m.summary_windows > 0 else m.windows
    total = sum(len(w.latencies_us) for w in used)
    frac = min(1.0, max_samples / total) if total else 1.0
    lats = [order_statistics(w.latencies_us, max(1, int(frac * len(w.latencies_us))))
            if w.latencies_us else np.zeros(0, dtype=np.int64) for w in used]
    return PointData(
        concurrency=m.concurrency,
        durations_s=np.array([w.duration_s for w in used], dtype=np.float64),
        completed=np.array([w.completed for w in used], dtype=np.int64),
        latencies_us=lats,
        errors=sum(w.errors for w in used),
        status=m.status,
        stable=m.stable,
        first_error=m.first_error,
    )


@dataclass
class ConfigData:
    key: str  # CandidateSpec.candidate_id of the tuned fields
    roles: list[str]  # "original" (the model as loaded), "recommended", "candidate"
    spec: dict
    points: dict[int, PointData] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.key} ({', '.join(self.roles)})" if self.roles else self.key


@dataclass
class Dataset:
    """One side of a comparison."""

    source: str
    kind: str  # "results" | "baseline"
    model: str
    environment: dict | None
    configs: dict[str, ConfigData]
    recommended: str | None = None
    settings: dict | None = None
    created_at: str = ""

    def config_for_role(self, role: str) -> ConfigData | None:
        for c in self.configs.values():
            if role in c.roles:
                return c
        return None


def legacy_environment(meta: dict) -> dict | None:
    """The little a "run" record without an environment says about it."""
    if not meta:
        return None
    server = meta.get("server") or {}
    return {"tuner_version": meta.get("tuner_version"), "started_at": meta.get("started_at"),
            "profile_sha256": meta.get("profile_sha256"),
            "server": {"version": server.get("version"), "extensions": server.get("extensions")},
            "model": {"name": meta.get("model"), "version": meta.get("version", ""), "config": None},
            "gpus": [], "gpus_known": False, "client": {}}


def _recommended_of(run_dir: Path | None) -> str | None:
    if run_dir is None or not (run_dir / "summary.json").exists():
        return None
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    rec = summary.get("recommended") or {}
    return rec.get("candidate_id")


def dataset_from_results(path: Path, *, all_candidates: bool = True,
                         max_samples: int = MAX_SAMPLES_PER_POINT) -> Dataset:
    """A run folder or results file. `all_candidates=False` keeps the original and recommended configs."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    results = load_results(path)
    if not results.meta and not results.points:
        raise CompareError(f"{path}: holds no measurements")
    rec_id = _recommended_of(run_dir)
    configs: dict[str, ConfigData] = {}
    by_cid: dict[str, str] = {}
    # the original first: when a candidate repeats its tuned fields, the original's points are kept
    for cand in sorted(results.candidates.values(), key=lambda c: not c.is_baseline):
        if cand.status == "skipped":
            continue
        key = cand.spec.candidate_id
        roles = (["original"] if cand.is_baseline else []) + (["recommended"] if cand.candidate_id == rec_id else [])
        if not roles:
            if not all_candidates:
                continue
            roles = ["candidate"]
        if key in configs:
            for r in roles:
                if r not in configs[key].roles and r != "candidate":
                    configs[key].roles.append(r)
            continue
        configs[key] = ConfigData(key=key, roles=roles, spec=cand.spec.to_dict())
        by_cid[cand.candidate_id] = key
    for m in results.points:
        key = by_cid.get(m.candidate_id)
        # request-rate points are not compared (points pair by concurrency)
        if key is None or not m.windows or m.request_rate is not None:
            continue
        configs[key].points[m.concurrency] = point_from_measurement(m, max_samples)
    configs = {k: c for k, c in configs.items() if c.points}
    recommended = next((c.key for c in configs.values() if "recommended" in c.roles), None)
    meta = results.meta
    return Dataset(
        source=str(path), kind="results", model=str(meta.get("model", "")),
        environment=meta.get("environment") or legacy_environment(meta),
        configs=configs, recommended=recommended, settings=meta.get("settings"),
        created_at=str(meta.get("started_at", "")),
    )


def load_dataset(path: Path | str) -> Dataset:
    """A run folder, a results file, or a saved baseline file."""
    path = Path(path)
    if not path.exists():
        raise CompareError(f"{path}: no such run folder, results file or baseline file")
    if path.is_dir():
        if not (path / RESULTS_FILE).exists():
            raise CompareError(f"{path}: has no {RESULTS_FILE}; pass a run folder written by tuner, "
                               "a results file, or a baseline saved by `tuner baseline save`")
        return dataset_from_results(path)
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096)
    except (OSError, UnicodeDecodeError) as err:
        raise CompareError(f"{path}: cannot read: {err}") from None
    if '"tuner-baseline"' in head:
        from tuner.gate.baseline import read_baseline

        return read_baseline(path)
    return dataset_from_results(path)


# ------------------------------------------------------------ statistics ---

def weighted_percentiles(values: np.ndarray, weights: np.ndarray, qs) -> np.ndarray:
    """Inverted-CDF percentiles of sorted `values` under each row of `weights` (rows x len(values)).

    Returns rows x len(qs); a row with no weight gives NaN.
    """
    if values.size == 0:
        return np.full((weights.shape[0], len(qs)), np.nan)
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    out = np.empty((weights.shape[0], len(qs)))
    for j, q in enumerate(qs):
        target = total * (q / 100.0)
        # first index whose cumulative weight reaches the target (tolerant of float sums)
        idx = np.argmax(cum >= target[:, None] - 1e-9 * np.maximum(total[:, None], 1.0), axis=1)
        out[:, j] = values[idx]
    out[total <= 0] = np.nan
    return out


def bootstrap_point(p: PointData, rng: np.random.Generator, n: int, run_noise: float) -> dict[str, np.ndarray]:
    """`n` bootstrap replicates of every metric of one point."""
    k = len(p.completed)
    mult = rng.multinomial(k, np.full(k, 1.0 / k), size=n)  # window multiplicities, n x k
    secs = mult @ p.durations_s
    thr = (mult @ p.completed.astype(np.float64)) / np.where(secs > 0, secs, np.nan)
    values, weights, win = p._pooled()
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
            reasons.append(f"{m} {_pct(change)} (CI {_pct(lo)}..{_pct(hi)}), limit "
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


# --------------------------------------------------------------- parsing ---

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


# --------------------------------------------------------------- outputs ---

def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:+.1f}%"


def _num(x: float, unit: str) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.1f}" if unit == "infer/s" else f"{x:.2f}"


def _limit(m: MetricResult) -> str:
    if m.limit is None:
        return "-"
    return f"{'-' if m.worse_is_lower else '+'}{m.limit * 100:g}%"


def _verdict(m: MetricResult) -> str:
    if m.regressed:
        return "REGRESSION"
    if m.not_gated:
        return "too few samples"
    if m.limit is None:
        return "info"
    beyond = (m.change < -m.limit) if m.worse_is_lower else (m.change > m.limit)
    if beyond:
        return "ok (not significant)"
    return "ok"


def rows(c: Comparison, gated_only: bool = False):
    """(point, metric) rows in display order."""
    for p in c.points:
        if not p.metrics:
            yield p, None
        for m in p.metrics:
            if gated_only and m.limit is None:
                continue
            yield p, m


def render_table(c: Comparison, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    conf = f"{c.options.confidence * 100:g}% CI"
    t = Table(title=f"{c.current.source} vs baseline {c.baseline.source}")
    for col in ("config", "conc.", "metric", "baseline", "current", "change", conf, "limit", "verdict"):
        t.add_column(col, justify="left" if col in ("config", "metric", "verdict") else "right")
    for p, m in rows(c):
        if m is None:
            t.add_row(p.label, str(p.concurrency), "-", "-", "-", "-", "-", "-",
                      "[bold red]REGRESSION[/]: " + "; ".join(p.reasons))
            continue
        v = _verdict(m)
        style = "bold red" if m.regressed else ("dim" if m.limit is None else "")
        t.add_row(p.label, str(p.concurrency), m.metric, _num(m.baseline, m.unit), _num(m.current, m.unit),
                  _pct(m.change), f"{_pct(m.ci_low)}..{_pct(m.ci_high)}", _limit(m),
                  f"[{style}]{v}[/]" if style else v)
    console.print(t)
    for line in _extra_lines(c):
        console.print(line, markup=False)
    color = "bold red" if c.regressed else "bold green"
    console.print(f"[{color}]{c.verdict()}[/]: {c.options.describe()}; {_simultaneous(c)}")


def _simultaneous(c: Comparison) -> str:
    return f"intervals simultaneous over {c.tests} gated tests (z {c.z:.2f})"


def _extra_lines(c: Comparison) -> list[str]:
    out = []
    for p in c.points:
        for r in p.reasons:
            if not any(r.startswith(m) for m in METRICS):
                out.append(f"{p.name}: {r}")
        for n in p.notes:
            out.append(f"{p.name}: note: {n}")
    for key, conc, side in c.unmatched:
        out.append(f"not compared: {key} @ concurrency {conc} (only in {side})")
    if c.env_mismatches:
        out.append("environment differs (compared anyway, --allow-env-mismatch): " + "; ".join(c.env_mismatches))
    if c.env_unknown:
        out.append("environment not recorded: " + "; ".join(c.env_unknown))
    if c.env_info:
        out.append("environment (not required to match): " + "; ".join(c.env_info))
    return out


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(c: Comparison) -> str:
    icon = ":x:" if c.regressed else ":white_check_mark:"
    conf = f"{c.options.confidence * 100:g}% CI"
    lines = [
        f"## {icon} tuner: {c.verdict()}",
        "",
        f"- baseline: `{c.baseline.source}` ({c.baseline.model or 'model ?'}, {c.baseline.created_at or 'time ?'})",
        f"- current: `{c.current.source}` ({c.current.model or 'model ?'}, {c.current.created_at or 'time ?'})",
        f"- a point regresses on {_md_escape(c.options.describe())}; {_simultaneous(c)}",
        "",
        f"| config | concurrency | metric | baseline | current | change | {conf} | limit | verdict |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for p, m in rows(c):
        if m is None:
            lines.append(f"| {_md_escape(p.label)} | {p.concurrency} | - | - | - | - | - | - | "
                         f"**REGRESSION**: {_md_escape('; '.join(p.reasons))} |")
            continue
        v = _verdict(m)
        lines.append(
            f"| {_md_escape(p.label)} | {p.concurrency} | {m.metric} ({m.unit}) | {_num(m.baseline, m.unit)} | "
            f"{_num(m.current, m.unit)} | {_pct(m.change)} | {_pct(m.ci_low)}..{_pct(m.ci_high)} | "
            f"{_limit(m)} | {'**REGRESSION**' if m.regressed else v} |")
    extra = _extra_lines(c)
    if extra:
        lines += [""] + [f"- {_md_escape(x)}" for x in extra]
    return "\n".join(lines) + "\n"


def to_junit(c: Comparison) -> str:
    """JUnit XML: one testcase per compared point (failure = regression), skipped for unmatched."""
    n = len(c.points) + len(c.unmatched)
    failures = len(c.regressions)
    suites = ET.Element("testsuites", name="tuner compare", tests=str(n), failures=str(failures),
                        errors="0", time=f"{c.duration_s:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=f"tuner.compare.{c.current.model or 'model'}",
                          tests=str(n), failures=str(failures), errors="0", skipped=str(len(c.unmatched)),
                          time=f"{c.duration_s:.3f}",
                          timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    props = ET.SubElement(suite, "properties")
    for name, value in (("baseline", c.baseline.source), ("current", c.current.source),
                        ("rule", c.options.describe())):
        ET.SubElement(props, "property", name=name, value=str(value))
    for p in c.points:
        case = ET.SubElement(suite, "testcase", classname=f"tuner.{p.key}", name=p.name, time="0")
        detail = "\n".join(
            f"{m.metric}: baseline {_num(m.baseline, m.unit)} {m.unit}, current {_num(m.current, m.unit)} "
            f"{m.unit}, change {_pct(m.change)} (CI {_pct(m.ci_low)}..{_pct(m.ci_high)}), limit {_limit(m)}: "
            f"{_verdict(m)}" for m in p.metrics)
        if p.regressed:
            fail = ET.SubElement(case, "failure", type="PerformanceRegression", message="; ".join(p.reasons))
            fail.text = detail
        else:
            out = ET.SubElement(case, "system-out")
            out.text = detail + ("\n" + "\n".join(p.notes) if p.notes else "")
    for key, conc, side in c.unmatched:
        case = ET.SubElement(suite, "testcase", classname=f"tuner.{key}", name=f"{key} @ concurrency {conc}",
                             time="0")
        ET.SubElement(case, "skipped", message=f"not compared: only in {side}")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _clean(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(c: Comparison) -> dict:
    return _clean({
        "schema": 1,
        "regressed": c.regressed,
        "verdict": c.verdict(),
        "baseline": {"source": c.baseline.source, "kind": c.baseline.kind, "model": c.baseline.model},
        "current": {"source": c.current.source, "kind": c.current.kind, "model": c.current.model},
        "options": asdict(c.options),
        "environment": {"mismatches": c.env_mismatches, "unknown": c.env_unknown, "info": c.env_info},
        "points": [
            {"config": p.key, "label": p.label, "concurrency": p.concurrency, "regressed": p.regressed,
             "reasons": p.reasons, "notes": p.notes,
             "metrics": [asdict(m) for m in p.metrics]}
            for p in c.points
        ],
        "unmatched": [{"config": k, "concurrency": conc, "only_in": side} for k, conc, side in c.unmatched],
    })


def write_outputs(c: Comparison, *, markdown: Path | None = None, junit: Path | None = None,
                  json_out: Path | None = None) -> None:
    try:
        if markdown is not None:
            write_atomic(Path(markdown), to_markdown(c))
        if junit is not None:
            write_atomic(Path(junit), to_junit(c))
        if json_out is not None:
            write_atomic(Path(json_out), json.dumps(to_json(c), indent=2) + "\n")
    except OSError as err:
        raise StoreError(f"cannot write the comparison report: {err}") from None


def compare_paths(baseline: Path | str, current: Path | str, options: CompareOptions | None = None) -> Comparison:
    return compare(load_dataset(baseline), load_dataset(current), options)


__all__ = ["CompareError", "CompareOptions", "Comparison", "Dataset", "EnvironmentMismatch", "compare",
           "compare_paths", "load_dataset", "parse_latency_limits", "parse_pct", "render_table", "to_json",
           "to_junit", "to_markdown", "write_outputs"]
