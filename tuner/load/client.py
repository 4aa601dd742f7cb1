"""Load generation: the only async code in tuner.

A load point runs in this process or in several load processes (`pool.py`)
or Ray actors (`raypool.py`), each with its own event loop and gRPC channel:
- closed loop: N requests in flight (`LoadClient.closed_loop`);
- open loop: requests sent at a target rate with constant or Poisson
  arrivals (`LoadClient.open_loop`); latency is measured from each request's
  scheduled send time, so a slow server or a late client shows in the
  latencies (no coordinated omission).

Requests are serialized once (`RequestPlan`) and sent over raw gRPC: unary
`ModelInfer`, or the bidirectional `ModelStreamInfer` stream for decoupled
models (time to first and to final response, responses per request). Every
response is checked: its byte length against a response already fully
checked, and one response in `check_every` (and any of a new length) is
parsed and checked for every declared output at its byte size. An empty or
mis-sized output counts as an error, never a success.

The parts: `request.py` (the request and the response checks), `spec.py`
(settings, what load to offer, each process's share), `schedule.py` (timer
and arrival times), `channel.py` (the gRPC channel and its raw methods),
`engine.py` (one process's sends and records), `source.py` (the interface
every load source implements, and the in-process one), `worker.py` (what a
load process or Ray actor runs), `pool.py` / `raypool.py` (several
processes, Ray actors); this module runs a point window by window from a
source (`LoadClient`) and re-exports the public names.

Each process only records timestamps; windows are cut at fixed boundaries of
the system-wide monotonic clock (`time.perf_counter_ns`, CLOCK_MONOTONIC on
Linux), so the windows of several processes cover the same time and merge
exactly (`stats.merge_windows`). Every window also carries the generator's
self-check (sends vs schedule, event-loop lag, client CPU) and the server's
telemetry (`telemetry.py`); `stats.client_summary` turns them into the
point's `client_bound` verdict.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from tritonclient.grpc import service_pb2

from tuner.errors import LoadError, TunerError
from tuner.load import telemetry
from tuner.load.channel import LoadChannel
from tuner.load.pool import WorkerPool
from tuner.load.raypool import RayPool
from tuner.load.request import DTYPES, RequestPlan, ResponseChecker, build_request, check_response
from tuner.load.source import LoadSource, LocalSource, load_error
from tuner.load.spec import ARRIVALS, LoadSettings, LoadShare, LoadSpec, PointSamples, resolve_workers
from tuner.results.samples import ServerDelta
from tuner.results.stats import is_stable, merge_server
from tuner.server.connection import Connection, as_connection

# The load's public names, wherever they live.
__all__ = ["ARRIVALS", "DTYPES", "LoadClient", "LoadSettings", "LoadShare", "LoadSpec", "PointSamples",
           "RequestPlan", "ResponseChecker", "build_request", "check_response"]

METRICS_PAUSE_S = 30.0  # after a failed scrape: don't wait on a dead endpoint every window


def _server_delta(before: service_pb2.ModelStatisticsResponse | None,
                  after: service_pb2.ModelStatisticsResponse | None, model: str | None = None) -> ServerDelta | None:
    """The counters' change between two statistics responses; `model`: that model's entries only
    (a response for every loaded model), else every entry (a response for one model)."""
    if before is None or after is None:
        return None

    def totals(resp):
        t = {"success_count": 0, "queue_ns": 0, "compute_input_ns": 0, "compute_infer_ns": 0,
             "compute_output_ns": 0, "inference_count": 0, "execution_count": 0}
        batches: dict[int, list[int]] = {}
        for ms in resp.model_stats:
            if model is not None and ms.name != model:
                continue
            s = ms.inference_stats
            t["success_count"] += s.success.count
            t["queue_ns"] += s.queue.ns
            t["compute_input_ns"] += s.compute_input.ns
            t["compute_infer_ns"] += s.compute_infer.ns
            t["compute_output_ns"] += s.compute_output.ns
            t["inference_count"] += ms.inference_count
            t["execution_count"] += ms.execution_count
            for b in ms.batch_stats:
                acc = batches.setdefault(int(b.batch_size), [0, 0])
                acc[0] += b.compute_infer.count
                acc[1] += b.compute_infer.ns
        return t, batches

    a, ab = totals(before)
    b, bb = totals(after)
    batch_delta = {}
    for size, (count, ns) in bb.items():
        c0, n0 = ab.get(size, [0, 0])
        if count - c0 > 0:
            batch_delta[size] = (count - c0, ns - n0)
    return ServerDelta(**{k: b[k] - a[k] for k in a}, batch_compute_infer=batch_delta)



class LoadClient:
    """One gRPC channel to a server (and load processes or Ray actors when asked), reused across load points.

    `url` is host:port or a `connection.Connection` (TLS, request headers);
    `metrics_url` is the server's Prometheus endpoint (None: no telemetry);
    `step_models`: models the requests pass through (an ensemble's steps, a BLS model's callees):
    each window also keeps their statistics deltas (`WindowSample.steps`). `shared`: the step models
    share the server, each sent its own requests (load/multi.py): a window's server figures are theirs
    together, not `model`'s alone.
    """

    def __init__(self, url: "str | Connection", model: str, version: str = "", metrics_url: str | None = None,
                 step_models: tuple[str, ...] = (), shared: bool = False):
        self.step_models = tuple(step_models)
        self.shared = shared
        self.connection = as_connection(url)
        self.url = self.connection.url
        self.model = model
        self.version = version
        self.metrics_url = metrics_url
        self.channel: LoadChannel | None = None
        self._pool: WorkerPool | RayPool | None = None
        self._pool_key: tuple = ()  # what the pool was started for; a point asking for the same reuses it
        self._metrics_off_until = 0.0

    async def __aenter__(self) -> "LoadClient":
        self.channel = await LoadChannel(self.connection, self.model, self.version).open()
        return self

    async def __aexit__(self, *exc) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self.channel is not None:
            await self.channel.close()

    async def statistics(self) -> service_pb2.ModelStatisticsResponse | None:
        """The model's statistics (with its steps'); None when not available (never a failed point)."""
        return await self.channel.statistics(all_models=bool(self.step_models))

    async def telemetry(self) -> telemetry.Snapshot | None:
        """One scrape of the server's metrics; None (and a pause) when not available."""
        if not self.metrics_url or time.monotonic() < self._metrics_off_until:
            return None
        loop = asyncio.get_running_loop()
        snap = await loop.run_in_executor(None, telemetry.scrape, self.metrics_url, self.model, self.version)
        if snap is None:
            self._metrics_off_until = time.monotonic() + METRICS_PAUSE_S
        return snap

    async def closed_loop(self, plan: RequestPlan, concurrency: int, settings: LoadSettings) -> PointSamples:
        """N requests in flight; warm up, then windows until stable or the limit."""
        return await self.run(plan, LoadSpec(concurrency=concurrency), settings)

    async def open_loop(self, plan: RequestPlan, rate: float, settings: LoadSettings,
                        arrivals: str = "constant") -> PointSamples:
        """Requests sent at `rate` per second (constant or Poisson arrivals), whatever the server does."""
        if not rate > 0:
            raise LoadError(f"request rate must be > 0, got {rate}")
        if arrivals not in ARRIVALS:
            raise LoadError(f"arrivals '{arrivals}' is not supported; use {' or '.join(ARRIVALS)}")
        return await self.run(plan, LoadSpec(rate=float(rate), arrivals=arrivals), settings)

    async def run(self, plan: RequestPlan, spec: LoadSpec, settings: LoadSettings) -> PointSamples:
        """One point from the source the settings ask for: Ray actors, load processes, or this process.

        The boundary where a failure inside a source becomes a LoadError (`source.load_error`).
        """
        if spec.rate > 0 and plan.sequence is not None:
            raise LoadError("a sequence model's load is a number of concurrent sequences, not a request rate; "
                            "use --concurrency (a profile's [search] concurrency)")
        try:
            if settings.ray_address:
                address, actors = settings.ray_address, max(0, settings.workers)
                return await self._run_pooled(plan, spec, settings, ("ray", address, actors), lambda: RayPool(
                    self.connection, self.model, self.version, address, actors))
            n = resolve_workers(spec, settings)
            if n > 1:
                return await self._run_pooled(plan, spec, settings, ("processes", n), lambda: WorkerPool(
                    self.connection, self.model, self.version, n))
            return await self._measure(spec, settings, LocalSource(self.channel, plan, spec, settings), 1)
        except TunerError:
            raise
        except Exception as err:
            raise load_error(err) from err

    async def _run_pooled(self, plan: RequestPlan, spec: LoadSpec, settings: LoadSettings, key: tuple,
                          new_pool: Callable[[], "WorkerPool | RayPool"]) -> PointSamples:
        """A point from the client's pool, started (`start()`) when there is none for `key` yet."""
        if self._pool is not None and self._pool_key != key:
            pool, self._pool = self._pool, None
            await pool.close()
        if self._pool is None:
            pool = new_pool()
            await pool.start()
            self._pool, self._pool_key = pool, key
        pool = self._pool
        try:
            return await self._measure(spec, settings, pool.source(plan, spec, settings), pool.n)
        except BaseException:
            self._pool = None  # its workers may be mid-point: start afresh
            await pool.close()
            raise

    async def _measure(self, spec: LoadSpec, settings: LoadSettings, source: LoadSource,
                       workers: int) -> PointSamples:
        result = PointSamples(concurrency=spec.concurrency if spec.rate <= 0 else 0,
                              request_rate=spec.rate if spec.rate > 0 else None,
                              arrivals=spec.arrivals if spec.rate > 0 else "closed", workers=workers)
        window_ns = int(settings.window_s * 1e9)
        t_start_ns = time.perf_counter_ns() + source.start_delay_ns
        await source.start(t_start_ns)
        try:
            boundary_ns = t_start_ns + int(settings.warmup_s * 1e9)
            await source.window(0, boundary_ns)  # the warm-up
            stats_before = await self.statistics()
            tele_before = await self.telemetry()
            k = 0
            while True:
                k += 1
                boundary_ns += window_ns
                window = await source.window(k, boundary_ns)
                if window is None:  # the load stopped (every request path died)
                    break
                stats_after = await self.statistics()
                tele_after = await self.telemetry()
                if self.step_models and stats_before is not None and stats_after is not None:
                    window.steps = {m: _server_delta(stats_before, stats_after, m) for m in self.step_models}
                if self.shared:  # every model was sent its own requests: the window's figures are theirs summed
                    window.server = merge_server(list(window.steps.values())) if window.steps else None
                else:
                    window.server = _server_delta(stats_before, stats_after, self.model if self.step_models else None)
                window.telemetry = telemetry.window_telemetry(tele_before, tele_after)
                result.windows.append(window)
                stats_before, tele_before = stats_after, tele_after
                if len(result.windows) >= settings.min_windows and is_stable(
                    result.windows[-settings.min_windows:], settings.stability_pct
                ):
                    result.stable = True
                    break
                if len(result.windows) >= settings.max_windows:
                    break
        finally:
            await source.stop()
        result.error_kinds, result.first_error = source.errors()
        result.worker_windows = source.worker_windows()
        return result
