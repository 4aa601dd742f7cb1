"""What a load worker runs, and how the driver reads it back: shared by the load
processes (`pool.py`) and the Ray actors (`raypool.py`).

A worker has its own event loop and gRPC channel (`channel.LoadChannel`) and
runs one share of a point at a time (`run_share`: an `engine.Engine`). It
cuts its windows at the boundaries the driver picked on the system-wide
monotonic clock (`time.perf_counter_ns`, CLOCK_MONOTONIC on Linux), so the
windows of every worker cover the same time, and sends each window's raw
samples to the driver, which merges them exactly (`stats.merge_windows`:
percentiles of the union of every worker's latencies). Its messages:

    ("window", k, WindowSample)                       window k = 1, 2, ... of this worker
    ("done", error kinds, first error, crashed)       the share ended; crashed: the engine's
                                                      failure (repr), "" when none
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tuner.load.channel import LoadChannel
from tuner.load.engine import Engine
from tuner.load.request import RequestPlan
from tuner.load.spec import LoadSettings, LoadShare

POLL_S = 0.02  # how often a waiting worker looks at the stop flag


@dataclass(frozen=True)
class ShareJob:
    """One worker's part of a point, and when to cut its windows (this host's monotonic clock)."""

    plan: RequestPlan
    share: LoadShare
    settings: LoadSettings
    t_start_ns: int

    @property
    def warmup_ns(self) -> int:
        return int(self.settings.warmup_s * 1e9)

    @property
    def window_ns(self) -> int:
        return int(self.settings.window_s * 1e9)


def window_timeout_s(settings: LoadSettings) -> float:
    """How long the driver waits for a worker's next message before it counts the worker as lost."""
    return settings.window_s + settings.request_timeout_s + 30.0


async def sleep_until(t_ns: int, stop) -> bool:
    """Sleep until t_ns; True when told to stop first (`stop`: a threading or multiprocessing Event)."""
    while True:
        if stop.is_set():
            return True
        left_s = (t_ns - time.perf_counter_ns()) / 1e9
        if left_s <= 0:
            return False
        await asyncio.sleep(min(left_s, POLL_S))


async def run_share(conn, channel: LoadChannel, job: ShareJob, stop) -> None:
    """Run one share until `stop` is set, the engine dies or max_windows + 1 windows; send every window to `conn`."""
    eng = Engine(channel, job.plan, job.settings, job.share)
    eng.start(job.t_start_ns)
    try:
        b = job.t_start_ns + job.warmup_ns
        if not await sleep_until(b, stop):
            eng.cut(b)  # the warm-up: discarded
            # one window past max_windows: the driver stops the point, not the worker
            for k in range(1, job.settings.max_windows + 2):
                b += job.window_ns
                if await sleep_until(b, stop):
                    break
                if eng.crashed is not None or not eng.alive():
                    break
                conn.send(("window", k, eng.cut(b)))
    finally:
        await eng.stop()
    crashed = repr(eng.crashed) if eng.crashed is not None else ""
    conn.send(("done", dict(eng.error_kinds), eng.first_error, crashed))


def merge_errors(done: dict[int, tuple]) -> tuple[dict[str, int], str]:
    """Error counts summed over workers (worker -> (kinds, first error, crashed)), and the first error."""
    kinds: dict[str, int] = {}
    first = ""
    for i in sorted(done):
        worker_kinds, worker_first, _ = done[i]
        for kind, count in worker_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
        first = first or worker_first
    return kinds, first


def first_crash(done: dict[int, tuple]) -> str:
    """The first worker's engine failure among the finished ones, "" when none crashed."""
    return next((d[2] for _, d in sorted(done.items()) if d[2]), "")
