"""Load from many machines: the load worker code as Ray actors.

`--workers ray` (a local Ray, started on demand, or the cluster named by
RAY_ADDRESS) or `--workers ray://HOST:PORT` (an existing cluster through Ray
Client) runs a point's load in Ray actors, one per alive node by default
(`LoadSettings.workers` N > 0: N actors), spread over the nodes (actor i on
node i mod nodes, hard node affinity). Each actor runs exactly what a load process runs
(`worker.run_share`: one event loop, one gRPC channel, `engine.Engine`) in a
thread of its own, and hands each window's raw samples to the driver, which
merges them exactly (`stats.merge_windows`), as for local processes
(`RaySource`).

Clocks. The driver picks the start and the window boundaries on its own
monotonic clock. An actor on the same boot of the same machine (same
/proc/sys/kernel/random/boot_id: Ray nodes of one host share
CLOCK_MONOTONIC) uses those boundaries as they are, so windows line up
exactly. An actor on another machine gets the start as wall-clock time
(time.time_ns) and maps it once, at the start of the point, onto its own
monotonic clock; its windows are then as aligned as the machines' wall clocks
(NTP: typically well under a millisecond on a LAN, against windows of
seconds). Keep the machines' clocks synchronized.

Failures. An actor that dies (its node lost, the process killed) marks the
window it did not deliver as failed (`WindowSample.failed_workers`); that
window is left out of stability and summaries, and the point goes on with the
actors left (their windows say which workers produced them). Only when every
actor is gone does the point stop.

Ray is an optional extra: `pip install 'tuner[distributed]'`.
"""

from __future__ import annotations

import asyncio
import os
import queue
import socket
import threading
import time
from dataclasses import replace

from tuner.errors import LoadError
from tuner.load.channel import LoadChannel
from tuner.load.eventloop import new_event_loop
from tuner.load.source import LoadSource, SourceError, sleep_until_ns
from tuner.load.worker import ShareJob, first_crash, merge_errors, run_share, window_timeout_s
from tuner.results.samples import WindowSample
from tuner.results.selfcheck import client_summary
from tuner.results.stats import merge_windows
from tuner.server.connection import Connection, as_connection

INSTALL_HINT = "load from a Ray cluster needs Ray: pip install 'tuner[distributed]'"
START_DELAY_NS = 1_000_000_000  # time for every actor to get the point before its start
READY_TIMEOUT_S = 120.0
CHANNEL_TIMEOUT_S = 60.0
CLOSE_TIMEOUT_S = 10.0
START_CALL_TIMEOUT_S = 60.0
STOP_CALL_TIMEOUT_S = 30.0


def parse_workers(value: "str | int | None") -> tuple[int, str | None]:
    """`--workers` value -> (count, ray address). "ray" -> (0, "auto"); "ray://H:P" -> (0, "ray://H:P")."""
    if value is None:
        return 0, None
    if isinstance(value, int):
        return value, None
    v = str(value).strip()
    if v == "ray":
        return 0, "auto"
    if v.startswith("ray://"):
        return 0, v
    try:
        return int(v), None
    except ValueError:
        raise LoadError(f"--workers takes a count, 'ray' or 'ray://HOST:PORT', got '{value}'") from None


def import_ray():
    try:
        import ray
    except ImportError:
        raise LoadError(INSTALL_HINT) from None
    return ray


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class _QueueConn:
    """The pipe end `worker.run_share` sends to, as a queue."""

    def __init__(self, q: "queue.Queue"):
        self.q = q

    def send(self, msg) -> None:
        self.q.put(msg)


class LoadActor:
    """One Ray actor: the code of one load process, on whatever node Ray put it."""

    def __init__(self, url: "str | Connection", model: str, version: str, index: int):
        self.index = index
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tuner-load", daemon=True)
        self.thread.start()
        self.channel = LoadChannel(as_connection(url), model, version)
        asyncio.run_coroutine_threadsafe(self.channel.open(), self.loop).result(CHANNEL_TIMEOUT_S)
        self.stop_event = threading.Event()
        self.q: queue.Queue = queue.Queue()
        self.future = None

    def info(self) -> dict:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
                "pid": os.getpid(), "boot_id": boot_id()}

    def run(self, job: ShareJob, driver_boot_id: str, start_wall_ns: int) -> None:
        """Start a point; `job.t_start_ns` is on the driver's monotonic clock, `start_wall_ns` the same instant."""
        if not (driver_boot_id and driver_boot_id == boot_id()):
            job = replace(job, t_start_ns=time.perf_counter_ns() + (start_wall_ns - time.time_ns()))
        self.stop_event.clear()
        self.q = queue.Queue()
        coro = run_share(_QueueConn(self.q), self.channel, job, self.stop_event)
        self.future = asyncio.run_coroutine_threadsafe(coro, self.loop)

    def next(self, timeout_s: float):
        """The next message of the point: ("window", k, WindowSample) or ("done", kinds, first, crashed)."""
        try:
            return self.q.get(timeout=timeout_s)
        except queue.Empty:
            fut = self.future
            if fut is not None and fut.done() and fut.exception() is not None:
                return ("done", {}, "", repr(fut.exception()))
            return ("timeout",)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        self.stop_event.set()
        try:
            asyncio.run_coroutine_threadsafe(self.channel.close(), self.loop).result(CLOSE_TIMEOUT_S)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


class RayPool:
    """Load actors on a Ray cluster, started once per LoadClient and reused for every point."""

    def __init__(self, url: "str | Connection", model: str, version: str, address: str, n: int = 0):
        self.url, self.model, self.version = url, model, version
        self.address, self.requested = address, n
        self.actors: list = []
        self.infos: list[dict] = []
        self.n = 0

    async def start(self) -> None:
        ray = import_ray()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._start_blocking, ray)

    def _start_blocking(self, ray) -> None:
        if not ray.is_initialized():
            # "ray": the cluster in RAY_ADDRESS, else a local Ray started here; "ray://H:P": Ray Client
            address = self.address if self.address.startswith("ray://") else None
            ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                     log_to_driver=False, ignore_reinit_error=True)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = sorted(nd["NodeID"] for nd in ray.nodes() if nd.get("Alive"))
        n = self.requested if self.requested > 0 else max(1, len(nodes))
        cls = ray.remote(num_cpus=0, max_concurrency=4, max_restarts=0)(LoadActor)
        # spread: actor i on node i mod nodes (SPREAD alone may stack actors that ask for no CPU);
        # (hard affinity: a soft one was seen to stack both actors on one node)
        self.actors = [
            cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=False)
                        if nodes else "SPREAD").remote(self.url, self.model, self.version, i)
            for i in range(n)
        ]
        try:
            self.infos = ray.get([a.info.remote() for a in self.actors], timeout=READY_TIMEOUT_S)
        except Exception as err:
            self._kill_all(ray)
            raise SourceError(f"the Ray load actors did not start: {err}") from None
        for i, info in enumerate(self.infos):
            info["worker"] = f"ray-{i}@{info['hostname']}"
        self.n = n

    def source(self, plan, spec, settings) -> "RaySource":
        return RaySource(self, plan, spec, settings)

    def _kill_all(self, ray) -> None:
        for a in self.actors:
            try:
                ray.kill(a)
            except Exception:
                pass
        self.actors = []

    async def close(self) -> None:
        ray = import_ray()
        loop = asyncio.get_running_loop()

        def close_blocking():
            refs = [a.close.remote() for a in self.actors]
            try:
                ray.get(refs, timeout=15)
            except Exception:
                pass
            self._kill_all(ray)
            # Ray itself stays up (a sweep opens a client per candidate; Ray shuts down at exit)

        await loop.run_in_executor(None, close_blocking)


class RaySource(LoadSource):
    """A load point spread over the pool's actors, seen as one source of windows."""

    start_delay_ns = START_DELAY_NS

    def __init__(self, pool: RayPool, plan, spec, settings):
        self.pool = pool
        self.plan, self.spec, self.settings = plan, spec, settings
        self.alive = list(range(pool.n))
        self.dead: dict[int, str] = {}
        self.per_worker: list[list[WindowSample]] = [[] for _ in range(pool.n)]
        self.done: dict[int, tuple] = {}
        self.window_timeout_s = window_timeout_s(settings)

    async def _call(self, ref, timeout_s: float):
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)

    async def start(self, t_start_ns: int) -> None:
        ray = import_ray()
        start_wall_ns = time.time_ns() + (t_start_ns - time.perf_counter_ns())
        refs = [a.run.remote(ShareJob(self.plan, self.spec.share(i, self.pool.n), self.settings, t_start_ns),
                             boot_id(), start_wall_ns)
                for i, a in enumerate(self.pool.actors)]
        for i, ref in enumerate(refs):
            try:
                await self._call(ref, START_CALL_TIMEOUT_S)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                self._lose(i, err)
        if not self.alive:
            raise SourceError("every Ray load actor died before the point started")

    def _lose(self, i: int, err) -> None:
        if i in self.alive:
            self.alive.remove(i)
            self.dead[i] = f"{self.pool.infos[i]['worker']}: {type(err).__name__}"

    async def _next_window(self, i: int, k: int):
        ray = import_ray()
        while i not in self.done:
            try:
                msg = await self._call(self.pool.actors[i].next.remote(self.window_timeout_s),
                                       self.window_timeout_s + 10)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                self._lose(i, err)
                return "lost"
            if msg[0] == "window":
                if msg[1] == k:
                    return msg[2]
            elif msg[0] == "done":
                self.done[i] = msg[1:]
            elif msg[0] == "timeout":
                self._lose(i, TimeoutError("no window"))
                return "lost"
        return None

    async def window(self, k: int, boundary_ns: int) -> WindowSample | None:
        if k == 0:  # the warm-up: the actors discard it themselves
            await sleep_until_ns(boundary_ns)
            return None
        idx = list(self.alive)
        if not idx:
            return None
        parts = await asyncio.gather(*(self._next_window(i, k) for i in idx))
        lost = [self.pool.infos[i]["worker"] for i, p in zip(idx, parts) if p == "lost"]
        got = [(i, p) for i, p in zip(idx, parts) if isinstance(p, WindowSample)]
        if any(p is None for p in parts):
            crashed = first_crash(self.done)
            if crashed:
                raise SourceError(f"a Ray load actor failed: {crashed}")
        if not got:
            return None
        for i, p in got:
            self.per_worker[i].append(p)
        merged = merge_windows([p for _, p in got])
        merged.workers = []
        for i, p in got:
            info = self.pool.infos[i]
            verdict = client_summary([p]) or {}
            merged.workers.append({
                "worker": info["worker"], "node_id": info["node_id"], "hostname": info["hostname"],
                "completed": p.completed, "target": (p.client or {}).get("target"),
                "achieved": (p.client or {}).get("achieved"), "client_bound": bool(verdict.get("client_bound")),
            })
        if lost:
            merged.failed_workers = lost
        return merged

    async def stop(self) -> None:
        ray = import_ray()
        for i in list(self.alive):
            try:
                await self._call(self.pool.actors[i].stop.remote(), STOP_CALL_TIMEOUT_S)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                self._lose(i, err)
        for i in list(self.alive):
            while i not in self.done and i in self.alive:
                if await self._next_window(i, -1) == "lost":
                    break

    def errors(self) -> tuple[dict[str, int], str]:
        kinds, first = merge_errors(self.done)
        if self.dead:
            kinds["WORKER_LOST"] = len(self.dead)
            first = first or f"WORKER_LOST: {'; '.join(self.dead.values())}"
        return kinds, first

    def worker_windows(self) -> list[list[WindowSample]]:
        return self.per_worker
