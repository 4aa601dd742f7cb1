"""Run folders: where one run keeps everything, and the lock that gives it one writer.

    reports/<name>-<UTC time>/
        results.jsonl            every record, appended as it happens (store.py)
        results.jsonl.torn       bytes of records cut short by a crash, set aside
        summary.json, report.html, recommended/, original/, profile.toml, ...

One session at a time writes a run folder: a second `tuner sweep`, `measure`,
`check` or `report` on a folder in use is refused, not interleaved. The lock
is an advisory `flock` on `RUN/.lock`, so it goes away with its process,
however that process ends.
"""

from __future__ import annotations

import fcntl
import time
from pathlib import Path

from tuner.errors import StoreError
from tuner.paths import safe_name

LOCK_FILE = ".lock"


def new_run_dir(label: str, out: Path | None = None, reports_dir: Path = Path("reports")) -> Path:
    """`out` if given, else reports/<label>-<UTC time>."""
    if out is not None:
        return Path(out)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return Path(reports_dir) / f"{safe_name(label)}-{stamp}"


class RunLock:
    """The run folder's lock: `with RunLock(run_dir): ...`; StoreError when another run holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._file = None

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        f = open(self.run_dir / LOCK_FILE, "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise StoreError(f"{self.run_dir} is in use by another tuner run; wait for it or pick "
                             "another --out") from None
        self._file = f
        return self

    def release(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
