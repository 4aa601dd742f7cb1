"""Several load processes for one load point.

`--workers N` runs a point's load in N processes (multiprocessing, spawn
context), each with its own event loop and gRPC channel, so one Python
process's CPU is never the limit. Each process runs `worker.run_share`: the
processes share a start time and cut their windows at the same boundaries of
the system-wide monotonic clock, and send each window's raw samples to the
parent, which merges them exactly, adds the server's statistics and
telemetry, judges stability and tells the processes to stop (`ProcessSource`).

The pool lives as long as its `LoadClient`, so processes start once per run.
Besides the messages of `worker.py`, a process sends ("ready", pid) once its
channel is open and ("error", traceback) when a share raised.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from tuner.load.channel import LoadChannel
from tuner.load.eventloop import new_event_loop
from tuner.load.source import LoadSource, SourceError, sleep_until_ns
from tuner.load.worker import ShareJob, first_crash, merge_errors, run_share, window_timeout_s
from tuner.results.samples import WindowSample
from tuner.results.stats import merge_windows
from tuner.server.connection import Connection, as_connection

START_TIMEOUT_S = 60.0
START_DELAY_NS = 300_000_000  # time for every process to get the "run" message before the start
JOIN_TIMEOUT_S = 5.0
KILL_JOIN_TIMEOUT_S = 2.0


def worker_main(conn, url: "str | Connection", model: str, version: str, index: int, stop) -> None:
    """A load process: one event loop, one channel, load points on request."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    channel = LoadChannel(as_connection(url), model, version)
    try:
        loop.run_until_complete(channel.open())
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
                    loop.run_until_complete(run_share(conn, channel, msg[1], stop))
                except Exception:
                    conn.send(("error", f"load process {index}: {traceback.format_exc(limit=6)}"))
    except (BrokenPipeError, EOFError):
        pass  # the parent went away
    finally:
        try:
            loop.run_until_complete(channel.close())
        finally:
            loop.close()


class WorkerPool:
    """N load processes, started once and reused for every load point."""

    def __init__(self, url: "str | Connection", model: str, version: str, n: int):
        self.url, self.model, self.version, self.n = url, model, version, n
        self.procs: list = []
        self.conns: list = []
        self.stop_event = None
        self.executor = ThreadPoolExecutor(max_workers=n, thread_name_prefix="tuner-load-recv")

    async def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.stop_event = ctx.Event()
        try:
            for i in range(self.n):
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=worker_main, name=f"tuner-load-{i}", daemon=True,
                                   args=(child, self.url, self.model, self.version, i, self.stop_event))
                proc.start()
                child.close()
                self.procs.append(proc)
                self.conns.append(parent)
            for i in range(self.n):
                msg = await self.recv(i, START_TIMEOUT_S)
                if msg[0] != "ready":
                    raise SourceError(f"load process {i} did not start: {msg}")
        except BaseException:
            await self.close()
            raise

    def _recv_blocking(self, i: int, timeout_s: float):
        conn = self.conns[i]
        try:
            if not conn.poll(timeout_s):
                raise SourceError(f"load process {i} did not answer within {timeout_s:.0f} s")
            return conn.recv()
        except (EOFError, OSError):
            code = self.procs[i].exitcode
            raise SourceError(f"load process {i} exited (code {code})") from None

    async def recv(self, i: int, timeout_s: float):
        """Process i's next message; a process's ("error", ...) raises."""
        loop = asyncio.get_running_loop()
        msg = await loop.run_in_executor(self.executor, self._recv_blocking, i, timeout_s)
        if msg[0] == "error":
            raise SourceError(msg[1])
        return msg

    def send(self, i: int, msg) -> None:
        try:
            self.conns[i].send(msg)
        except (OSError, BrokenPipeError):
            raise SourceError(f"load process {i} exited (code {self.procs[i].exitcode})") from None

    def source(self, plan, spec, settings) -> "ProcessSource":
        return ProcessSource(self, plan, spec, settings)

    async def close(self) -> None:
        for conn in self.conns:
            try:
                conn.send(("exit",))
            except (OSError, BrokenPipeError):
                pass
        loop = asyncio.get_running_loop()
        for proc in self.procs:
            await loop.run_in_executor(self.executor, proc.join, JOIN_TIMEOUT_S)
            if proc.is_alive():
                proc.terminate()
                await loop.run_in_executor(self.executor, proc.join, KILL_JOIN_TIMEOUT_S)
        for conn in self.conns:
            conn.close()
        self.procs, self.conns = [], []
        self.executor.shutdown(wait=False)


class ProcessSource(LoadSource):
    """A load point spread over the pool's processes, seen as one source of windows."""

    start_delay_ns = START_DELAY_NS

    def __init__(self, pool: WorkerPool, plan, spec, settings):
        self.pool = pool
        self.plan, self.spec, self.settings = plan, spec, settings
        self.per_worker: list[list[WindowSample]] = [[] for _ in range(pool.n)]
        self.done: dict[int, tuple] = {}
        self.cpu_prev_s = 0.0
        self.window_timeout_s = window_timeout_s(settings)

    async def start(self, t_start_ns: int) -> None:
        for i in range(self.pool.n):
            job = ShareJob(self.plan, self.spec.share(i, self.pool.n), self.settings, t_start_ns)
            self.pool.send(i, ("run", job))

    async def _next_window(self, i: int, k: int) -> WindowSample | None:
        while i not in self.done:
            msg = await self.pool.recv(i, self.window_timeout_s)
            if msg[0] == "window":
                if msg[1] == k:
                    return msg[2]
            elif msg[0] == "done":
                self.done[i] = msg[1:]
        return None

    async def window(self, k: int, boundary_ns: int) -> WindowSample | None:
        if k == 0:  # the warm-up: the processes discard it themselves
            await sleep_until_ns(boundary_ns)
            self.cpu_prev_s = time.process_time()
            return None
        parts = await asyncio.gather(*(self._next_window(i, k) for i in range(self.pool.n)))
        if any(p is None for p in parts):
            crashed = first_crash(self.done)
            if crashed:
                raise SourceError(f"a load process failed: {crashed}")
            return None
        for i, p in enumerate(parts):
            self.per_worker[i].append(p)
        merged = merge_windows(list(parts))
        cpu_s = time.process_time()
        if merged.client is not None:  # the parent's share: merging, statistics, telemetry
            merged.client["cpu_s"] = (merged.client.get("cpu_s") or 0.0) + (cpu_s - self.cpu_prev_s)
        self.cpu_prev_s = cpu_s
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
