"""The sweep's live progress display (rich): candidate i of n, load level,
elapsed and estimated time. Fed by the sweep's events; draws nothing else."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class SweepProgress:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(), TextColumn("{task.fields[eta]}"), console=self.console, transient=False,
        )
        self.task = None
        self.started = time.monotonic()
        self.current = ""

    def __enter__(self) -> "SweepProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _eta(self, index: int, total: int) -> str:
        done = index - 1
        if done <= 0:
            return "eta -"
        per = (time.monotonic() - self.started) / done
        return f"eta {per * (total - done):.0f} s"

    def on_event(self, kind: str, **info) -> None:
        if kind == "candidate":
            if self.task is None:
                self.task = self.progress.add_task("", total=info["total"], eta="eta -")
            self.current = info["candidate_id"]
            self.progress.update(self.task, completed=info["index"] - 1,
                                 description=f"candidate {info['index']}/{info['total']} {self.current}",
                                 eta=self._eta(info["index"], info["total"]))
        elif kind == "level" and self.task is not None:
            self.progress.update(self.task, description=f"{self.current} @ concurrency {info['concurrency']}")
        elif kind == "point":
            m = info["measurement"]
            s = m.summary()
            self.progress.console.print(
                f"  {m.candidate_id} c={m.concurrency}: {s.throughput_infer_per_s:.1f} infer/s "
                f"p99 {s.latency_ms['p99']:.2f} ms{'' if m.stable else ' (unstable)'}"
                f"{' errors ' + str(s.errors) if s.errors else ''}")
        elif kind == "skipped":
            self.progress.console.print(f"  {info['candidate_id']} skipped: {info['reason']}", markup=False)
        elif kind == "restart":
            self.progress.console.print(f"  tritonserver exited ({info['reason']}); restarted", markup=False)
        elif kind == "failed":
            self.progress.console.print(f"  {info['candidate_id']} FAILED: {info['reason']}", markup=False)
        elif kind == "torn":
            note = info["note"]
            self.progress.console.print(f"  a record cut short by a crash ({note.size_bytes} bytes) was set aside "
                                        f"in {note.kept_in}", markup=False)
        elif kind == "restore" and self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[0].total, description="restoring original config")
