"""One side of a comparison (`Dataset`): the stored load points of a run or of a saved baseline.

A run folder or results file (`results.jsonl`) and a baseline file (`tuner
baseline save`; its format is documented in `tuner.gate.baseline`) are read
into the same form, so a comparison never knows which it got. Every summary
window is reduced to evenly spaced order statistics, at most
`MAX_SAMPLES_PER_POINT` per point, exactly as a saved baseline stores them:
a run and its own saved baseline then compare as identical.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.gate.errors import CompareError
from tuner.gate.percentiles import PERCENTILE_KEYS, order_statistics, weighted_percentiles
from tuner.results.records import Measurement, RunRecord
from tuner.results.store import RESULTS_FILE, load_results

MAX_SAMPLES_PER_POINT = 1000
BASELINE_FORMAT = "tuner-baseline"
# bumped when old readers would misread a file: they refuse newer schemas
BASELINE_SCHEMA = 1


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
        values, weights, _ = self.pooled_samples()
        q = weighted_percentiles(values, weights[None, :], [int(k[1:]) for k in PERCENTILE_KEYS])[0]
        return {k: float(v) / 1000.0 for k, v in zip(PERCENTILE_KEYS, q)}

    def pooled_samples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def legacy_environment(run: RunRecord | None) -> dict | None:
    """The little a "run" record without an environment says about it."""
    if run is None:
        return None
    return {"tuner_version": run.tuner_version or None, "started_at": run.started_at or None,
            "profile_sha256": run.profile_sha256,
            "server": {"version": run.server.version or None, "extensions": list(run.server.extensions) or None},
            "model": {"name": run.model or None, "version": run.version, "config": None},
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
    run = results.run
    return Dataset(
        source=str(path), kind="results", model=run.model if run else "",
        environment=(run.environment if run else None) or legacy_environment(run),
        configs=configs, recommended=recommended, settings=run.settings if run else None,
        created_at=run.started_at if run else "",
    )


def read_baseline_doc(path: Path) -> dict:
    """A baseline file's JSON document, after checking its format and schema."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{path}: no such baseline file; save one with `tuner baseline save RUN_DIR "
                           "--profile NAME`") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise CompareError(f"{path}: not a readable baseline file: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise CompareError(f"{path}: not a tuner baseline (no \"format\": \"{BASELINE_FORMAT}\")")
    schema = doc.get("schema")
    if not isinstance(schema, int) or schema < 1:
        raise CompareError(f"{path}: baseline has no valid schema number")
    if schema > BASELINE_SCHEMA:
        raise CompareError(f"{path}: baseline schema {schema} is newer than this tuner reads "
                           f"({BASELINE_SCHEMA}); upgrade tuner")
    return doc


def read_baseline(path: Path) -> Dataset:
    """A baseline file saved by `tuner baseline save`."""
    doc = read_baseline_doc(path)
    configs: dict[str, ConfigData] = {}
    try:
        for c in doc["configs"]:
            conf = ConfigData(key=str(c["key"]), roles=list(c.get("roles", [])), spec=dict(c["spec"]))
            for p in c["points"]:
                pd = PointData.from_dict(p)
                conf.points[pd.concurrency] = pd
            configs[conf.key] = conf
    except (KeyError, TypeError, ValueError) as err:
        raise CompareError(f"{path}: damaged baseline ({type(err).__name__}: {err}); save it again") from None
    if not configs:
        raise CompareError(f"{path}: baseline holds no configs")
    return Dataset(source=str(path), kind="baseline", model=str(doc.get("model", "")),
                   environment=doc.get("environment"), configs=configs, recommended=doc.get("recommended"),
                   settings=doc.get("settings"), created_at=str(doc.get("created_at", "")))


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
    if f'"{BASELINE_FORMAT}"' in head:
        return read_baseline(path)
    return dataset_from_results(path)
