"""The results file on disk: append, repair, read back.

`results.jsonl` holds one JSON record per line (`tuner/results/records.py`
types them and keeps the schema history). Each record is appended and
fsynced as it is made, so a crash loses at most the record being written.

A crash mid-write leaves a torn last line. Readers skip it (so `tuner
report` works on a run that is still going, or one that died), and the
writer repairs it before appending anything (`ResultsFile.open_for_append`):
the torn bytes are moved to `results.jsonl.torn`, never dropped, and a
`torn_tail` record says so, so the run's summary can tell. Without the
repair, the next record would be glued onto the torn bytes and the line
would be unreadable for good.

Whole-file outputs (summary.json, report.html, ...) are written atomically
(`write_atomic`): readers see the old file or the new one, never half.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from tuner.errors import StoreError
from tuner.results.records import (SCHEMA, CandidateEnd, CandidateRecord, ConfirmPlan, ConfirmPoint, Measurement,
                                   Record, RestoreFailed, RunRecord, ServerRestart, SessionEnd, TornTail)

RESULTS_FILE = "results.jsonl"
TORN_SUFFIX = ".torn"



def append_record(path: Path, record: dict) -> None:
    """Append one record (its wire form) as one line, and make it durable before returning."""
    line = json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _complete_length(data: bytes) -> int:
    """Bytes of `data` that form whole records: up to the last newline, plus a last line
    without one if it parses (a record whose newline alone was lost is kept)."""
    end = data.rfind(b"\n") + 1
    tail = data[end:]
    if tail.strip():
        try:
            json.loads(tail)
            return len(data)
        except ValueError:
            return end
    return len(data)


class ResultsFile:
    """One run's results.jsonl, written by the session that holds the run folder's lock."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def torn_path(self) -> Path:
        return self.path.with_name(self.path.name + TORN_SUFFIX)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def repair_tail(self) -> TornTail | None:
        """Move a torn last line (a crash mid-write) to results.jsonl.torn; say so in the file."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        keep = _complete_length(data)
        if keep == len(data) and (not data or data.endswith(b"\n")):
            return None
        torn = data[keep:]
        if torn.strip():
            # appended, with the offset it had: several crashes each leave their own piece
            with open(self.torn_path, "ab") as f:
                f.write(torn + b"\n")
                f.flush()
                os.fsync(f.fileno())
        with open(self.path, "r+b") as f:
            f.truncate(keep)
            if keep and not data[:keep].endswith(b"\n"):
                f.seek(keep)
                f.write(b"\n")  # a whole record that only lacked its newline
            f.flush()
            os.fsync(f.fileno())
        if not torn.strip():
            return None
        note = TornTail(size_bytes=len(torn), offset_bytes=keep, kept_in=self.torn_path.name)
        self.append(note)
        return note

    def append(self, record: Record) -> None:
        append_record(self.path, record.to_record())


def read_records(path: Path) -> Iterator[dict]:
    """Every record's wire form, in file order; a torn last line is skipped (see the module docstring)."""
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
    """Everything a results file holds, read back into typed records."""

    meta: dict  # the latest session's run record, wire form ({}: none); `run` types it
    candidates: dict[str, CandidateRecord]
    points: list[Measurement]
    ended: set[str] = field(default_factory=set)  # candidates the search was done with
    restarts: list[ServerRestart] = field(default_factory=list)
    torn: list[TornTail] = field(default_factory=list)  # torn records set aside by a repair
    restore_failures: list[RestoreFailed] = field(default_factory=list)
    duration_s: float = 0.0  # summed over every session of the run
    torn_tail_unrepaired: bool = False  # the file ends in a torn line no writer has repaired yet
    confirm_plan: ConfirmPlan | None = None  # the sweep's confirmation phase, when it started
    confirmation: list[ConfirmPoint] = field(default_factory=list)  # its visits (one per round and config)

    @property
    def run(self) -> RunRecord | None:
        return RunRecord.from_record(self.meta) if self.meta else None

    def points_of(self, candidate_id: str) -> list[Measurement]:
        return sorted((p for p in self.points if p.candidate_id == candidate_id), key=lambda p: p.load_key)


def load_results(path: Path) -> RunResults:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    out = RunResults(meta={}, candidates={}, points=[])
    points: dict[tuple[str, tuple], Measurement] = {}
    visits: dict[tuple[int, str], ConfirmPoint] = {}
    for rec in read_records(path):
        kind = rec.get("type")
        if kind == "run":
            out.meta = rec  # a resumed run's latest session speaks for it
        elif kind == "candidate":
            c = CandidateRecord.from_record(rec)
            out.candidates[c.candidate_id] = c
        elif kind == "point":
            m = Measurement.from_record(rec)
            points[(m.candidate_id, m.load_key)] = m  # a re-measured point replaces the old
        elif kind == "candidate_end":
            out.ended.add(CandidateEnd.from_record(rec).candidate_id)
        elif kind == "session_end":
            out.duration_s += SessionEnd.from_record(rec).duration_s
        elif kind == "server_restart":
            out.restarts.append(ServerRestart.from_record(rec))
        elif kind == "torn_tail":
            out.torn.append(TornTail.from_record(rec))
        elif kind == "restore_failed":
            out.restore_failures.append(RestoreFailed.from_record(rec))
        elif kind == "confirm_plan":
            out.confirm_plan = ConfirmPlan.from_record(rec)
        elif kind == "confirm_point":
            cp = ConfirmPoint.from_record(rec)
            visits[(cp.round, cp.candidate_id)] = cp  # a visit measured again replaces the old
    out.points = list(points.values())
    out.confirmation = sorted(visits.values(), key=lambda v: v.round)
    try:
        data = path.read_bytes()
        out.torn_tail_unrepaired = _complete_length(data) != len(data)
    except OSError:
        pass
    return out


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
