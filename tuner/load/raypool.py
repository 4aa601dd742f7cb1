"""Load from many machines: the load worker code as Ray actors.

`--workers ray` (a local Ray, started on demand, or the cluster named by
RAY_ADDRESS) or `--workers ray://HOST:PORT` (an existing cluster through Ray
Client) runs a point's load in Ray actors, one per alive node by default
(`LoadSettings.workers` N > 0: N actors), spread over the nodes (actor i on
node i mod nodes, soft node affinity). Each actor runs exactly what a load process runs
(`workers._run_share`: one event loop, one gRPC channel, `engine.Engine`) in a
thread of its own, and hands each window's raw samples to the driver, which
merges them exactly (`stats.merge_windows`), as for local processes.

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

from tuner.errors import LoadError
from tuner.results.stats import WindowSample, client_summary, merge_windows

INSTALL_HINT = "load from a Ray cluster needs Ray: pip install 'tuner[distributed]'"
START_DELAY_NS = 1_000_000_000  # time for every actor to get the point before its start
READY_TIMEOUT_S = 120.0


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
    """The pipe end `workers._run_share` sends to, as a queue."""

    def __init__(self, q: "queue.Queue"):
        self.q = q

    def send(self, msg) -> None:
        self.q.put(msg)


class LoadActor:
    """One Ray actor: the code of one load process, on whatever node Ray put it."""

    def __init__(self, url, model: str, version: str, index: int):
        from tuner.load.client import LoadClient

        self.index = index
        from tuner.load.eventloop import new_event_loop

        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="tuner-load", daemon=True)
        self.thread.start()
        self.client = LoadClient(url, model, version)
        asyncio.run_coroutine_threadsafe(self.client.__aenter__(), self.loop).result(60)
        self.stop_event = threading.Event()
        self.q: queue.Queue = queue.Queue()
        self.future = None

    def info(self) -> dict:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname(),
                "pid": os.getpid(), "boot_id": boot_id()}

    def run(self, plan, share, settings, clock: tuple, warmup_ns: int, window_ns: int, max_windows: int) -> None:
        """Start a point; `clock` = (driver boot id, start on the driver's monotonic clock, start wall time)."""
        from tuner.load.pool import _run_share

        driver_boot, start_mono, start_wall = clock
        if driver_boot and driver_boot == boot_id():
            t_start = start_mono
        else:
            t_start = time.perf_counter_ns() + (start_wall - time.time_ns())
        self.stop_event.clear()
        self.q = queue.Queue()
        coro = _run_share(_QueueConn(self.q), self.client, plan, share, settings, t_start, warmup_ns, window_ns,
                          max_windows, self.stop_event)
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
            asyncio.run_coroutine_threadsafe(self.client.__aexit__(None, None, None), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)


class RayPool:
    """Load actors on a Ray cluster, started once per LoadClient and reused for every point."""

    def __init__(self, url, model: str, version: str, address: str, n: int = 0):
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
            raise LoadError(f"the Ray load actors did not start: {err}") from None
        for i, info in enumerate(self.infos):
            info["worker"] = f"ray-{i}@{info['hostname']}"
        self.n = n

    def source(self, plan, spec, settings) -> "_RaySource":
        return _RaySource(self, plan, spec, settings)

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


class _RaySource:
    """A load point spread over the pool's actors, seen as one source of windows."""

    start_delay_ns = START_DELAY_NS

    def __init__(self, pool: RayPool, plan, spec, settings):
        self.pool = pool
        self.plan, self.spec, self.settings = plan, spec, settings
        self.alive = list(range(pool.n))
        self.dead: dict[int, str] = {}
        self.per_worker: list[list[WindowSample]] = [[] for _ in range(pool.n)]
        self.done: dict[int, tuple] = {}
        self.window_timeout_s = settings.window_s + settings.request_timeout_s + 30.0

    async def _call(self, ref, timeout_s: float):
        return await asyncio.wait_for(asyncio.wrap_future(ref.future()), timeout_s)

    async def start(self, t_start: int) -> None:
        ray = import_ray()
        s = self.settings
        clock = (boot_id(), t_start, time.time_ns() + (t_start - time.perf_counter_ns()))
        refs = [a.run.remote(self.plan, self.spec.share(i, self.pool.n), s, clock, int(s.warmup_s * 1e9),
                             int(s.window_s * 1e9), s.max_windows) for i, a in enumerate(self.pool.actors)]
        for i, ref in enumerate(refs):
            try:
                await self._call(ref, 60.0)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                self._lose(i, err)
        if not self.alive:
            raise LoadError("every Ray load actor died before the point started")

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

    async def window(self, k: int, b: int) -> WindowSample | None:
        if k == 0:
            await asyncio.sleep(max(0.0, (b - time.perf_counter_ns()) / 1e9))
            return None
        idx = list(self.alive)
        if not idx:
            return None
        parts = await asyncio.gather(*(self._next_window(i, k) for i in idx))
        lost = [self.pool.infos[i]["worker"] for i, p in zip(idx, parts) if p == "lost"]
        got = [(i, p) for i, p in zip(idx, parts) if isinstance(p, WindowSample)]
        if any(p is None for p in parts):
            crashed = [d[2] for d in self.done.values() if d[2]]
            if crashed:
                raise LoadError(f"a Ray load actor failed: {crashed[0]}")
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
                await self._call(self.pool.actors[i].stop.remote(), 30.0)
            except (ray.exceptions.RayActorError, asyncio.TimeoutError) as err:
                self._lose(i, err)
        for i in list(self.alive):
            while i not in self.done and i in self.alive:
                if await self._next_window(i, -1) == "lost":
                    break

    def errors(self) -> tuple[dict[str, int], str]:
        from tuner.load.pool import merge_errors

        kinds, first = merge_errors(self.done)
        if self.dead:
            kinds["WORKER_LOST"] = len(self.dead)
            first = first or f"WORKER_LOST: {'; '.join(self.dead.values())}"
        return kinds, first

    def worker_windows(self) -> list[list[WindowSample]]:
        return self.per_worker
