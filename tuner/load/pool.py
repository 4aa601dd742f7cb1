"""Several load processes for one load point.

`--workers N` runs a point's load in N processes (multiprocessing, spawn
context), each with its own event loop and gRPC channel, so one Python
process's CPU is never the limit. The processes share a start time and cut
their windows at the same boundaries of the system-wide monotonic clock
(`time.perf_counter_ns` is CLOCK_MONOTONIC on Linux), and send each window's
raw samples to the parent, which merges them exactly (`stats.merge_windows`:
percentiles of the union of every process's latencies), adds the server's
statistics and telemetry, judges stability and tells the processes to stop.

The pool lives as long as its `LoadClient`, so processes start once per run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from tuner.errors import LoadError
from tuner.results.stats import WindowSample, merge_windows

START_TIMEOUT_S = 60.0
START_DELAY_NS = 300_000_000  # time for every process to get the "run" message before the start


def _new_loop() -> asyncio.AbstractEventLoop:
    from tuner.load.eventloop import new_event_loop

    return new_event_loop()


async def _sleep_until(t_ns: int, stop) -> bool:
    """Sleep until t_ns; True when told to stop first."""
    while True:
        if stop.is_set():
            return True
        left = (t_ns - time.perf_counter_ns()) / 1e9
        if left <= 0:
            return False
        await asyncio.sleep(min(left, 0.02))


async def _run_share(conn, client, plan, share, settings, t_start: int, warmup_ns: int, window_ns: int,
                     max_windows: int, stop) -> None:
    from tuner.load.engine import Engine

    eng = Engine(client, plan, settings, share)
    eng.start(t_start)
    try:
        b = t_start + warmup_ns
        if not await _sleep_until(b, stop):
            eng.cut(b)  # the warm-up: discarded
            for k in range(1, max_windows + 2):
                b += window_ns
                if await _sleep_until(b, stop):
                    break
                if eng.crashed is not None or not eng.alive():
                    break
                conn.send(("window", k, eng.cut(b)))
    finally:
        await eng.stop()
    crashed = repr(eng.crashed) if eng.crashed is not None else ""
    conn.send(("done", dict(eng.error_kinds), eng.first_error, crashed))


def worker_main(conn, url, model: str, version: str, index: int, stop) -> None:
    """A load process: one event loop, one channel, load points on request."""
    from tuner.load.client import LoadClient

    loop = _new_loop()
    asyncio.set_event_loop(loop)
    client = LoadClient(url, model, version)
    try:
        loop.run_until_complete(client.__aenter__())
        conn.send(("ready", os.getpid()))
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                break
            if msg[0] == "exit":
                break
            if msg[0] == "run":
                try:
                    loop.run_until_complete(_run_share(conn, client, *msg[1:], stop))
                except Exception:
                    conn.send(("error", f"load process {index}: {traceback.format_exc(limit=6)}"))
    except (BrokenPipeError, EOFError):
        pass  # the parent went away
    finally:
        try:
            loop.run_until_complete(client.__aexit__(None, None, None))
        finally:
            loop.close()


class WorkerPool:
    """N load processes, started once and reused for every load point."""

    def __init__(self, url, model: str, version: str, n: int):  # url: str or connection.Connection
        self.url, self.model, self.version, self.n = url, model, version, n
        self.procs: list = []
        self.conns: list = []
        self.stop_event = None
        self.executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tuner-load-recv")

    async def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        for i in range(self.n):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, name=f"tuner-load-{i}", daemon=True,
                               args=(child, self.url, self.model, self.version, i, self.stop_event))
            proc.start()
            child.close()
            self.procs.append(proc)
            self.conns.append(parent)
        try:
            for i in range(self.n):
                msg = await self.recv(i, START_TIMEOUT_S)
                if msg[0] != "ready":
                    raise LoadError(f"load process {i} did not start: {msg}")
        except BaseException:
            await self.close()
            raise

    def _recv_blocking(self, i: int, timeout_s: float):
        conn = self.conns[i]
        try:
            if not conn.poll(timeout_s):
                raise LoadError(f"load process {i} did not answer within {timeout_s:.0f} s")
            return conn.recv()
        except (EOFError, OSError):
            code = self.procs[i].exitcode
            raise LoadError(f"load process {i} exited (code {code})") from None

    async def recv(self, i: int, timeout_s: float):
        loop = asyncio.get_running_loop()
        msg = await loop.run_in_executor(self.executor, self._recv_blocking, i, timeout_s)
        if msg[0] == "error":
            raise LoadError(msg[1])
        return msg

    def source(self, plan, spec, settings) -> "_PoolSource":
        return _PoolSource(self, plan, spec, settings)

    async def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("exit",))
            except (OSError, BrokenPipeError):
                pass
        loop = asyncio.get_running_loop()
        for proc in self.procs:
            await loop.run_in_executor(self.executor, proc.join, 5.0)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(self.executor, proc.join, 2.0)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        self.executor.shutdown(wait=False)


class _PoolSource:
    """A load point spread over the pool's processes, seen as one source of windows."""

    start_delay_ns = START_DELAY_NS

    def __init__(self, pool: WorkerPool, plan, spec, settings):
        self.pool = pool
        self.plan, self.spec, self.settings = plan, spec, settings
        self.per_worker: list[list[WindowSample]] = [[] for _ in range(pool.n)]
        self.done: dict[int, tuple] = {}
        self.cpu_prev = 0.0
        self.window_timeout_s = settings.window_s + settings.request_timeout_s + 30.0

    async def start(self, t_start: int) -> None:
        s = self.settings
        for i, conn in enumerate(self.pool.conns):
            share = self.spec.share(i, self.pool.n)
            conn.send(("run", self.plan, share, s, t_start, int(s.warmup_s * 1e9), int(s.window_s * 1e9),
                       s.max_windows))

    async def _next_window(self, i: int, k: int) -> WindowSample | None:
        while i not in self.done:
            msg = await self.pool.recv(i, self.window_timeout_s)
            if msg[0] == "window":
                if msg[1] == k:
                    return msg[2]
            elif msg[0] == "done":
                self.done[i] = msg[1:]
        return None

    async def window(self, k: int, b: int) -> WindowSample | None:
        if k == 0:  # the warm-up: the processes discard it themselves
            await asyncio.sleep(max(0.0, (b - time.perf_counter_ns()) / 1e9))
            self.cpu_prev = time.process_time()
            return None
        parts = await asyncio.gather(*(self._next_window(i, k) for i in range(self.pool.n)))
        if any(p is None for p in parts):
            crashed = [d[2] for d in self.done.values() if d[2]]
            if crashed:
                raise LoadError(f"a load process failed: {crashed[0]}")
            return None
        for i, p in enumerate(parts):
            self.per_worker[i].append(p)
        merged = merge_windows(list(parts))
        cpu = time.process_time()
        if merged.client is not None:  # the parent's share: merging, statistics, telemetry
            merged.client["cpu_s"] = (merged.client.get("cpu_s") or 0.0) + (cpu - self.cpu_prev)
        self.cpu_prev = cpu
        return merged

    async def stop(self) -> None:
        self.pool.stop_event.set()
        try:
            for i in range(self.pool.n):
                while i not in self.done:
                    msg = await self.pool.recv(i, self.window_timeout_s)
                    if msg[0] == "done":
                        self.done[i] = msg[1:]
        finally:
            self.pool.stop_event.clear()

    def errors(self) -> tuple[dict[str, int], str]:
        return merge_errors(self.done)

    def worker_windows(self) -> list[list[WindowSample]]:
        return self.per_worker


def merge_errors(done: dict) -> tuple[dict[str, int], str]:
    """Error counts summed over workers (worker -> (kinds, first error, _)), and the first error."""
    kinds: dict[str, int] = {}
    first = ""
    for i in sorted(done):
        ek, fe, _ = done[i]
        for k, v in ek.items():
            kinds[k] = kinds.get(k, 0) + v
        first = first or fe
    return kinds, first
