"""The results file: versioned JSON lines, one record per line, appended and
flushed as each load point finishes, so nothing measured is lost if a run dies.

Schema history:
  1  records {"schema": 1, "type": "run" | "candidate" | "point", ...};
     a point keeps every window's raw latencies (microseconds) and the
     server statistics deltas, so every statistic can be recomputed.

Readers skip a torn last line (a crash mid-write) and refuse newer schemas.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tuner.config import CandidateSpec
from tuner.errors import StoreError
from tuner.results.stats import PointSummary, WindowSample, summarize

SCHEMA = 1
RESULTS_FILE = "results.jsonl"


@dataclass
class Measurement:
    """One load point of one candidate, with its raw samples."""

    candidate_id: str
    concurrency: int
    windows: list[WindowSample]
    stable: bool
    status: str = "ok"  # "ok" | "failed"
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    summary_windows: int = 3
    request_rate: float | None = None  # open loop: the target requests/s (concurrency is 0 then)

    @property
    def load_key(self) -> tuple[str, float]:
        """What load the point offered: ("rate", R) or ("concurrency", N); one point per key and candidate."""
        if self.request_rate is not None:
            return ("rate", float(self.request_rate))
        return ("concurrency", float(self.concurrency))

    def summary(self) -> PointSummary:
        return summarize(self.windows, self.summary_windows)

    def to_record(self) -> dict:
        return {
            "schema": SCHEMA,
            "type": "point",
            "candidate_id": self.candidate_id,
            "concurrency": self.concurrency,
            "stable": self.stable,
            "status": self.status,
            "error_kinds": self.error_kinds,
            "first_error": self.first_error,
            "summary_windows": self.summary_windows,
            "request_rate": self.request_rate,
            "windows": [w.to_dict() for w in self.windows],
        }

    @classmethod
    def from_record(cls, r: dict) -> "Measurement":
        return cls(
            candidate_id=r["candidate_id"],
            concurrency=int(r["concurrency"]),
            windows=[WindowSample.from_dict(w) for w in r.get("windows", [])],
            stable=bool(r.get("stable", False)),
            status=r.get("status", "ok"),
            error_kinds=dict(r.get("error_kinds", {})),
            first_error=r.get("first_error", ""),
            summary_windows=int(r.get("summary_windows", 3)),
            request_rate=float(r["request_rate"]) if r.get("request_rate") is not None else None,
        )


@dataclass
class CandidateRecord:
    """A candidate config as applied: what was sent and what the server read back."""

    spec: CandidateSpec
    status: str  # "loaded" | "failed" | "skipped"
    reason: str = ""
    config_json: str = ""  # the config the server read back (Triton fills defaults)
    is_baseline: bool = False

    @property
    def candidate_id(self) -> str:
        return "baseline" if self.is_baseline else self.spec.candidate_id

    def to_record(self) -> dict:
        return {
            "schema": SCHEMA,
            "type": "candidate",
            "candidate_id": self.candidate_id,
            "spec": self.spec.to_dict(),
            "status": self.status,
            "reason": self.reason,
            "config_json": self.config_json,
            "is_baseline": self.is_baseline,
        }

    @classmethod
    def from_record(cls, r: dict) -> "CandidateRecord":
        return cls(
            spec=CandidateSpec.from_dict(r["spec"]),
            status=r["status"],
            reason=r.get("reason", ""),
            config_json=r.get("config_json", ""),
            is_baseline=bool(r.get("is_baseline", False)),
        )


def append_record(path: Path, record: dict) -> None:
    line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_records(path: Path) -> Iterator[dict]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise StoreError(f"{path}: no results file; pass a run folder written by tuner") from None
    except (OSError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: cannot read results: {err}") from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines):
                continue  # torn last line from a crash mid-write: the rest is intact
            raise StoreError(f"{path}:{i}: corrupt results line; the file was edited or damaged") from None
        schema = rec.get("schema", 0)
        if schema > SCHEMA:
            raise StoreError(
                f"{path}:{i}: results schema {schema} is newer than this tuner reads ({SCHEMA}); upgrade tuner"
            )
        yield rec


@dataclass
class RunResults:
    """Everything a results file holds, read back into dataclasses."""

    meta: dict
    candidates: dict[str, CandidateRecord]
    points: list[Measurement]

    def points_of(self, candidate_id: str) -> list[Measurement]:
        return sorted((p for p in self.points if p.candidate_id == candidate_id), key=lambda p: p.load_key)


def load_results(path: Path) -> RunResults:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    meta: dict = {}
    candidates: dict[str, CandidateRecord] = {}
    points: dict[tuple[str, tuple], Measurement] = {}
    for rec in read_records(path):
        kind = rec.get("type")
        if kind == "run":
            meta = rec
        elif kind == "candidate":
            c = CandidateRecord.from_record(rec)
            candidates[c.candidate_id] = c
        elif kind == "point":
            m = Measurement.from_record(rec)
            points[(m.candidate_id, m.load_key)] = m  # a re-measured point replaces the old
    return RunResults(meta=meta, candidates=candidates, points=list(points.values()))


def write_atomic(path: Path, text: str) -> None:
    """Write a whole file so readers see the old or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def json_safe(obj):
    """JSON has no NaN or infinity: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj
