"""Load generation: the only async code in tuner.

A load point runs in one or several load processes (`workers.py`), each with
its own event loop and gRPC channel:
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
import ctypes
import math
import os
import time
from array import array
from bisect import bisect_left
from dataclasses import dataclass, field

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from . import telemetry
from .connection import Connection, as_connection
from .errors import LoadError
from .stats import LATE_SEND_MS, WindowSample, ServerDelta, is_stable

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
STATS_METHOD = "/inference.GRPCInferenceService/ModelStatistics"

# Triton data type -> (wire name, bytes per element; 0 for BYTES)
DTYPES: dict[int, tuple[str, int]] = {
    mc.TYPE_BOOL: ("BOOL", 1),
    mc.TYPE_UINT8: ("UINT8", 1), mc.TYPE_UINT16: ("UINT16", 2),
    mc.TYPE_UINT32: ("UINT32", 4), mc.TYPE_UINT64: ("UINT64", 8),
    mc.TYPE_INT8: ("INT8", 1), mc.TYPE_INT16: ("INT16", 2),
    mc.TYPE_INT32: ("INT32", 4), mc.TYPE_INT64: ("INT64", 8),
    mc.TYPE_FP16: ("FP16", 2), mc.TYPE_FP32: ("FP32", 4), mc.TYPE_FP64: ("FP64", 8),
    mc.TYPE_BF16: ("BF16", 2),
    mc.TYPE_STRING: ("BYTES", 0),
}

_NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}

@dataclass(frozen=True)
class RequestPlan:
    """A request serialized once, and what every response must carry."""

    payload: bytes
    expected_outputs: tuple[tuple[str, int], ...]  # (name, byte size; -1 = any non-empty)
    batch_size: int = 1
    decoupled: bool = False  # model_transaction_policy { decoupled: true }: the stream only


def stream_payload(payload: bytes) -> bytes:
    """The request for the stream: asks Triton to flag each request's final response."""
    req = service_pb2.ModelInferRequest.FromString(payload)
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req.SerializeToString()


def _full_shape(t, cfg: mc.ModelConfig, shapes: dict[str, list[int]], batch: int) -> list[int]:
    dims = list(t.dims)
    if t.name in shapes:
        dims = list(shapes[t.name])
    if any(d < 0 for d in dims):
        raise LoadError(
            f"input '{t.name}' has variable dims {list(t.dims)}; give its shape in the profile "
            f"([model.shapes] {t.name} = [...]) or with --shape {t.name}=D1,D2"
        )
    return ([batch] if cfg.max_batch_size > 0 else []) + dims


def _tensor_bytes(wire: str, shape: list[int], data: str, rng: np.random.Generator) -> bytes:
    n = int(math.prod(shape))
    if wire == "BYTES":
        # Triton's BYTES wire format: 4-byte little-endian length, then the bytes.
        item = b"0" * 8 if data == "zeros" else b"tuner-in"
        return (len(item).to_bytes(4, "little") + item) * n
    if wire == "BF16":
        if data == "zeros":
            return bytes(2 * n)
        f32 = rng.standard_normal(n).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    dtype = _NUMPY[wire]
    if data == "zeros":
        return np.zeros(n, dtype=dtype).tobytes()
    if wire == "BOOL":
        return rng.integers(0, 2, n).astype(np.bool_).tobytes()
    if wire.startswith("FP"):
        return rng.standard_normal(n).astype(dtype).tobytes()
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), n, dtype=dtype).tobytes()


def build_request(
    cfg: mc.ModelConfig,
    model: str,
    version: str = "",
    shapes: dict[str, list[int]] | None = None,
    data: str = "random",
    seed: int = 0,
    batch_size: int = 1,
) -> RequestPlan:
    """Inputs for every declared (non-optional) input, from the model's config."""
    shapes = shapes or {}
    if data not in ("random", "zeros"):
        raise LoadError(f"input data '{data}' is not supported; use random or zeros")
    unknown = set(shapes) - {t.name for t in cfg.input}
    if unknown:
        raise LoadError(
            f"shape given for unknown input(s) {sorted(unknown)}; the model's inputs are "
            f"{[t.name for t in cfg.input]}"
        )
    rng = np.random.default_rng(seed)
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for t in cfg.input:
        if t.optional and t.name not in shapes:
            continue
        if t.data_type not in DTYPES:
            raise LoadError(f"input '{t.name}' has unsupported data type {mc.DataType.Name(t.data_type)}")
        wire, _ = DTYPES[t.data_type]
        shape = _full_shape(t, cfg, shapes, batch_size)
        tensor = req.inputs.add(name=t.name, datatype=wire, shape=shape)
        del tensor  # raw contents carry the data
        req.raw_input_contents.append(_tensor_bytes(wire, shape, data, rng))
    expected = []
    for t in cfg.output:
        wire, size = DTYPES.get(t.data_type, ("", 0))
        dims = list(t.dims)
        if size == 0 or any(d < 0 for d in dims):
            expected.append((t.name, -1))
        else:
            n = math.prod(dims) * (batch_size if cfg.max_batch_size > 0 else 1)
            expected.append((t.name, n * size))
    return RequestPlan(req.SerializeToString(), tuple(expected), batch_size,
                       decoupled=bool(cfg.model_transaction_policy.decoupled))


def check_parsed(resp: service_pb2.ModelInferResponse, expected: tuple[tuple[str, int], ...]) -> str | None:
    """None when the response carries every expected output; else the problem."""
    contents = resp.raw_output_contents
    names = [o.name for o in resp.outputs]
    for name, size in expected:
        try:
            i = names.index(name)
        except ValueError:
            return f"missing output {name}"
        got = len(contents[i]) if i < len(contents) else 0
        if got == 0 or (size >= 0 and got != size):
            return f"output {name} has {got} bytes, expected {size if size >= 0 else '> 0'}"
    return None


def check_response(raw: bytes, expected: tuple[tuple[str, int], ...]) -> str | None:
    """None when the serialized response carries every expected output; else the problem."""
    return check_parsed(service_pb2.ModelInferResponse.FromString(raw), expected)


class ResponseChecker:
    """Checks every response, parsing only a sample.

    A response is fully parsed and checked (`check_response`) when its byte
    length is new, and one in `every` otherwise; the rest are checked by byte
    length against responses that passed the full check. For a fixed request
    a good response always has the same length, and an empty or mis-sized
    output changes it, so no bad response passes as good.
    """

    __slots__ = ("expected", "every", "good", "n", "checked")
    MAX_LENGTHS = 16  # outputs of variable size: at most this many known-good lengths

    def __init__(self, expected: tuple[tuple[str, int], ...], every: int = 16):
        self.expected = expected
        self.every = max(1, int(every))
        self.good: set[int] = set()
        self.n = 0
        self.checked = 0

    def __call__(self, raw: bytes) -> str | None:
        size = len(raw)
        if size in self.good:
            self.n += 1
            if self.n < self.every:
                return None
            self.n = 0
        self.checked += 1
        problem = check_response(raw, self.expected)
        if problem is None and len(self.good) < self.MAX_LENGTHS:
            self.good.add(size)
        return problem


@dataclass
class LoadSettings:
    warmup_s: float = 1.0
    window_s: float = 2.0
    min_windows: int = 3
    max_windows: int = 8
    stability_pct: float = 10.0
    request_timeout_s: float = 30.0
    workers: int = 0  # load processes; 0 = automatic (`auto_workers`); with ray_address: Ray actors, 0 = one per node
    # load from Ray actors (distributed.py): "auto" (RAY_ADDRESS or a local Ray) or "ray://HOST:PORT"; None = local
    ray_address: str | None = None
    check_every: int = 16  # fully parse one response in N (the rest: byte length check)
    transport: str = "auto"  # "unary" | "stream" | "auto" (see `use_stream`)
    max_inflight: int = 0  # open loop: outstanding requests before sends wait; 0 = half a second's worth
    drain_s: float = 10.0  # open loop: wait this long for outstanding requests at a point's end


@dataclass(frozen=True)
class LoadSpec:
    """What load to offer: N requests in flight, or a request rate."""

    concurrency: int = 0
    rate: float = 0.0  # requests/s; > 0 means open loop
    arrivals: str = "closed"  # "closed" | "constant" | "poisson"

    @property
    def mode(self) -> str:
        return "rate" if self.rate > 0 else "concurrency"

    def share(self, i: int, n: int, seed: int = 0) -> "LoadShare":
        """Process i's part of the load when n processes offer it together."""
        if self.rate > 0:
            # constant: the processes interleave (process i sends at i/R, i/R + n/R, ...);
            # poisson: n independent Poisson processes of rate R/n merge into one of rate R.
            return LoadShare(self, 0, self.rate / n, int(i * 1e9 / self.rate), seed * 1000 + i)
        base, extra = divmod(self.concurrency, n)
        return LoadShare(self, base + (1 if i < extra else 0), 0.0, 0, seed * 1000 + i)


@dataclass(frozen=True)
class LoadShare:
    spec: LoadSpec
    concurrency: int
    rate: float
    offset_ns: int
    seed: int


ARRIVALS = ("constant", "poisson")
TRANSPORTS = ("auto", "unary", "stream")
STREAM_MAX_CONCURRENCY = 2
PER_PROCESS_CONCURRENCY = 64  # automatic workers: one load process per this many in flight
PER_PROCESS_RATE = 8000.0  # ... or per this many requests/s
STREAM_MAX_RATE = 2500.0  # "auto" transport: open loops up to this rate go over a stream
SPIN_LEAD_NS = 150_000  # open loop up to SPIN_MAX_RATE: wake this early and yield until the send time
SPIN_MAX_RATE = 1000.0


def use_stream(plan: RequestPlan, settings: LoadSettings, share: "LoadShare") -> bool:
    """Whether a load point goes over the ModelStreamInfer stream instead of unary calls.

    Decoupled models: always (unary calls can't carry several responses).
    Otherwise "unary" or "stream" as set; "auto" is the stream for a closed
    loop of at most STREAM_MAX_CONCURRENCY requests in flight or an open loop
    of at most STREAM_MAX_RATE requests/s per process (a stream skips the
    per-call HTTP/2 stream set-up: ~0.1 ms less per request on a 2-core
    host), unary calls above (one stream tops out near 10k requests/s and
    costs more client CPU per request there).
    """
    if plan.decoupled:
        return True
    if settings.transport not in TRANSPORTS:
        raise LoadError(f"transport '{settings.transport}' is not supported; use {', '.join(TRANSPORTS)}")
    if settings.transport == "auto":
        if share.rate > 0:
            return share.rate <= STREAM_MAX_RATE
        return 0 < share.concurrency <= STREAM_MAX_CONCURRENCY
    return settings.transport == "stream"


def max_inflight(settings: LoadSettings, rate: float) -> int:
    """Open loop: requests outstanding before sends wait (the server is saturated then)."""
    if settings.max_inflight and settings.max_inflight > 0:
        return settings.max_inflight
    return max(256, int(rate * 0.5))


def auto_workers(spec: LoadSpec, cores: int | None = None) -> int:
    """Load processes for a load point: enough that none is the bottleneck.

    At most half the cores (the rest for the server when it shares the host,
    and for the OS); one process per PER_PROCESS_CONCURRENCY requests in
    flight or PER_PROCESS_RATE requests/s. On a 2-core host: 1.
    """
    cores = cores or os.cpu_count() or 1
    budget = max(1, cores // 2)
    if spec.rate > 0:
        need = math.ceil(spec.rate / PER_PROCESS_RATE)
    else:
        need = math.ceil(max(1, spec.concurrency) / PER_PROCESS_CONCURRENCY)
    return max(1, min(budget, need, 16))


def resolve_workers(spec: LoadSpec, settings: LoadSettings) -> int:
    n = settings.workers if settings.workers and settings.workers > 0 else auto_workers(spec)
    if spec.rate <= 0:
        n = min(n, max(1, spec.concurrency))
    return max(1, n)


@dataclass
class PointSamples:
    """Raw result of one load point: every window's samples."""

    concurrency: int  # closed loop; 0 for an open-loop (request-rate) point
    windows: list[WindowSample] = field(default_factory=list)
    stable: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    request_rate: float | None = None  # open loop: target requests/s
    arrivals: str = "closed"
    workers: int = 1
    # several load processes: each process's own windows (merged into `windows`)
    worker_windows: list[list[WindowSample]] | None = None


def _server_delta(before: service_pb2.ModelStatisticsResponse | None,
                  after: service_pb2.ModelStatisticsResponse | None) -> ServerDelta | None:
    if before is None or after is None:
        return None

    def totals(resp):
        t = {"success_count": 0, "queue_ns": 0, "compute_input_ns": 0, "compute_infer_ns": 0,
             "compute_output_ns": 0, "inference_count": 0, "execution_count": 0}
        batches: dict[int, list[int]] = {}
        for ms in resp.model_stats:
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


# ------------------------------------------------------------------ timing ---

class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval_s", ctypes.c_long), ("interval_ns", ctypes.c_long),
                ("value_s", ctypes.c_long), ("value_ns", ctypes.c_long)]


try:
    _LIBC = ctypes.CDLL(None, use_errno=True)
    _LIBC.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
    _LIBC.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
except (OSError, AttributeError):  # not Linux: asyncio's own timers
    _LIBC = None

_CLOCK_MONOTONIC, _TFD_NONBLOCK, _TFD_CLOEXEC, _TFD_TIMER_ABSTIME = 1, 0o4000, 0o2000000, 1


class _Timer:
    """Sleep until an absolute perf_counter_ns time, to the microsecond.

    asyncio's timers wake through epoll's millisecond timeout, rounded up: an
    idle loop wakes up to 1 ms late, which would count as latency in open-loop
    mode. A Linux timerfd (CLOCK_MONOTONIC, the clock of perf_counter) wakes
    the loop through a readable fd instead. Falls back to asyncio.sleep.
    """

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.fd = -1
        self.fut: asyncio.Future | None = None
        self.spec = _ITimerSpec()
        if _LIBC is not None and time.get_clock_info("perf_counter").implementation.endswith("(CLOCK_MONOTONIC)"):
            try:
                fd = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
            except AttributeError:
                fd = -1
            if fd >= 0:
                self.fd = fd
                self.loop.add_reader(fd, self._ready)

    def sleep_until(self, t_ns: int):
        if self.fd < 0:
            return asyncio.sleep(max(0.0, (t_ns - time.perf_counter_ns()) / 1e9))
        spec = self.spec
        spec.value_s, spec.value_ns = divmod(max(1, t_ns), 1_000_000_000)
        _LIBC.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None)
        self.fut = fut = self.loop.create_future()
        return fut

    def _ready(self) -> None:
        try:
            os.read(self.fd, 8)
        except (BlockingIOError, InterruptedError):
            return
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class _Schedule:
    """Send times (perf_counter ns) of an open-loop load: constant or Poisson arrivals."""

    CHUNK = 4096

    def __init__(self, start_ns: int, rate: float, arrivals: str, offset_ns: int = 0, seed: int = 0):
        if arrivals not in ARRIVALS:
            raise LoadError(f"arrivals '{arrivals}' is not supported; use {' or '.join(ARRIVALS)}")
        self.start = start_ns + offset_ns
        self.interval = 1e9 / rate
        self.poisson = arrivals == "poisson"
        self.rng = np.random.default_rng(seed)
        self.times = array("q")
        self.last = float(self.start)

    def _extend(self) -> None:
        gaps = self.rng.exponential(self.interval, self.CHUNK)
        cum = self.last + np.cumsum(gaps)
        self.last = float(cum[-1])
        self.times.extend(cum.astype(np.int64).tolist())

    def at(self, i: int) -> int:
        if not self.poisson:
            return self.start + int(i * self.interval)
        while i >= len(self.times):
            self._extend()
        return self.times[i]

    def count_before(self, t_ns: int) -> int:
        """Sends scheduled before t_ns."""
        if t_ns <= self.start:
            return 0
        if not self.poisson:
            return math.ceil((t_ns - self.start) / self.interval)
        while not self.times or self.times[-1] < t_ns:
            self._extend()
        return bisect_left(self.times, t_ns)


def _us(values_ns: array) -> list[int]:
    return (np.frombuffer(values_ns, dtype=np.int64) // 1000).tolist() if len(values_ns) else []


def _pct_ms(values_ns, q: float) -> float | None:
    if not len(values_ns):
        return None
    return float(np.percentile(np.frombuffer(values_ns, dtype=np.int64), q)) / 1e6


# ------------------------------------------------------------------ engine ---

class _Engine:
    """One process's share of a load point: sends requests, records timestamps.

    Nothing here computes statistics: `cut(b)` slices what was recorded since
    the previous boundary into a WindowSample (samples belong to the window in
    which they completed), so windows of several processes line up exactly.
    """

    # Event-loop lag ticker period: each wake-up costs ~0.15 ms of CPU on a small
    # VM, so 20 a second (40 samples in a 2 s window) rather than 100.
    TICK_NS = 50_000_000

    def __init__(self, client: "LoadClient", plan: RequestPlan, settings: LoadSettings, share: LoadShare):
        self.client = client
        self.plan = plan
        self.settings = settings
        self.share = share
        self.stream = use_stream(plan, settings, share)
        self.ends = array("q")
        self.lats = array("q")
        self.firsts = array("q")
        self.nresp = array("q")
        self.err_ts = array("q")
        self.send_ts = array("q")
        self.late = array("q")
        self.capped_ts = array("q")
        self.lag_ts = array("q")
        self.lag = array("q")
        self.error_kinds: dict[str, int] = {}
        self.first_error = ""
        self.checker = ResponseChecker(plan.expected_outputs, settings.check_every)
        self.running = False
        self.inflight = 0
        self.tasks: list[asyncio.Task] = []
        self.pending: set[asyncio.Task] = set()
        self.schedule: _Schedule | None = None
        self.streamer: _Streamer | None = None
        self.crashed: BaseException | None = None
        self._idx: dict[str, int] = {}
        self._prev_b = 0
        self._prev_cpu = 0.0
        self._prev_wall = 0
        self._prev_checked = 0
        self._prev_sched = 0

    # -- recording
    def error(self, kind: str, detail: str) -> None:
        self.err_ts.append(time.perf_counter_ns())
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = f"{kind}: {detail}"[:300]

    # -- lifecycle
    def start(self, t_start_ns: int) -> None:
        self.running = True
        self._prev_b = t_start_ns
        self._prev_cpu = time.process_time()
        self._prev_wall = time.perf_counter_ns()
        self.tasks.append(asyncio.create_task(self._main(t_start_ns)))
        self.tasks.append(asyncio.create_task(self._ticker()))

    async def _main(self, t_start_ns: int) -> None:
        try:
            await asyncio.sleep(max(0.0, (t_start_ns - time.perf_counter_ns()) / 1e9))
            share = self.share
            if self.stream:
                self.streamer = _Streamer(self)
                if share.rate > 0:
                    self.tasks.append(asyncio.create_task(self.streamer.run(0)))
                    await self._scheduler(t_start_ns, self.streamer.send)
                else:
                    await self.streamer.run(share.concurrency)
            elif share.rate > 0:
                await self._scheduler(t_start_ns, self._fire_unary)
            else:
                workers = [asyncio.create_task(self._closed_unary()) for _ in range(share.concurrency)]
                self.tasks.extend(workers)
                await asyncio.gather(*workers)
        except asyncio.CancelledError:
            raise
        except BaseException as err:  # a bug, not a server problem: surface it
            self.crashed = err
            raise

    async def stop(self) -> None:
        self.running = False
        if self.share.rate > 0:
            # Triton runs requests the client gave up on: wait for them, so the
            # next point doesn't start behind a backlog.
            deadline = time.perf_counter_ns() + int(self.settings.drain_s * 1e9)
            while time.perf_counter_ns() < deadline and (
                    self.pending or (self.streamer is not None and self.streamer.pending)):
                await asyncio.sleep(0.01)
        if self.streamer is not None:
            self.streamer.close()
        tasks = self.tasks + list(self.pending)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def alive(self) -> bool:
        return self.crashed is None and not (self.tasks and self.tasks[0].done())

    # -- closed loop, unary
    async def _closed_unary(self) -> None:
        infer = self.client._infer
        payload = self.plan.payload
        timeout = self.settings.request_timeout_s
        md = self.client._metadata
        perf = time.perf_counter_ns
        check = self.checker
        ends, lats = self.ends.append, self.lats.append
        while self.running:
            t0 = perf()
            self.inflight += 1
            try:
                raw = await infer(payload, timeout=timeout, metadata=md)
            except grpc.aio.AioRpcError as err:
                self.inflight -= 1
                self.error(err.code().name, err.details() or "")
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    await asyncio.sleep(0.05)  # don't spin on a dead server
                continue
            t1 = perf()
            self.inflight -= 1
            problem = check(raw)
            if problem is not None:
                self.error("BAD_OUTPUT", problem)
                continue
            ends(t1)
            lats(t1 - t0)

    # -- open loop
    async def _scheduler(self, t_start_ns: int, fire) -> None:
        share = self.share
        sched = self.schedule = _Schedule(t_start_ns, share.rate, share.spec.arrivals, share.offset_ns, share.seed)
        timer = _Timer()
        perf = time.perf_counter_ns
        cap = max_inflight(self.settings, share.rate)
        send_ts, late, capped = self.send_ts.append, self.late.append, self.capped_ts.append
        i, last_capped = 0, -1
        t = sched.at(0)
        # At low rates, wake SPIN_LEAD_NS early and yield to the loop until the
        # send time: a sleeping loop wakes ~70 us late, which counts as latency
        # (measured from the schedule). Costs at most SPIN_LEAD_NS of CPU per send.
        lead = SPIN_LEAD_NS if share.rate <= SPIN_MAX_RATE else 0
        try:
            while self.running:
                now = perf()
                if t > now:
                    if t - now > lead:
                        await timer.sleep_until(t - lead)
                    else:
                        await asyncio.sleep(0)
                    continue
                n = 0
                while t <= now and n < 256:
                    if self.inflight >= cap:
                        if last_capped != i:
                            capped(now)
                            last_capped = i
                        break
                    send_ts(now)
                    late(now - t)
                    fire(t)
                    i += 1
                    n += 1
                    t = sched.at(i)
                if n == 0:
                    await asyncio.sleep(0.0005)  # at the in-flight cap: let requests complete
                elif t <= perf():
                    await asyncio.sleep(0)  # behind schedule: let responses in between bursts
        finally:
            timer.close()

    def _fire_unary(self, t_sched: int) -> None:
        self.inflight += 1
        # The call is made here, not in the task: its send is queued now, one
        # event-loop turn earlier than from inside a new task.
        call = self.client._infer(self.plan.payload, timeout=self.settings.request_timeout_s,
                                  metadata=self.client._metadata)
        task = asyncio.get_running_loop().create_task(self._one_unary(call, t_sched))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _one_unary(self, call, t_sched: int) -> None:
        try:
            raw = await call
        except asyncio.CancelledError:
            call.cancel()
            raise
        except grpc.aio.AioRpcError as err:
            self.error(err.code().name, err.details() or "")
            return
        finally:
            self.inflight -= 1
        t1 = time.perf_counter_ns()
        problem = self.checker(raw)
        if problem is not None:
            self.error("BAD_OUTPUT", problem)
            return
        self.ends.append(t1)
        self.lats.append(t1 - t_sched)

    # -- self-check
    async def _ticker(self) -> None:
        timer = _Timer()
        perf = time.perf_counter_ns
        tick = self.TICK_NS
        try:
            t = perf()
            while self.running:
                target = t + tick
                await timer.sleep_until(target)
                now = perf()
                self.lag_ts.append(now)
                self.lag.append(max(0, now - target))
                t = now
        finally:
            timer.close()

    def _since(self, key: str, arr: array, b: int) -> tuple[int, int]:
        i0 = self._idx.get(key, 0)
        i1 = bisect_left(arr, b, i0)
        self._idx[key] = i1
        return i0, i1

    def cut(self, b: int) -> WindowSample:
        """What completed in [previous boundary, b), as one window of this process."""
        now_cpu, now_wall = time.process_time(), time.perf_counter_ns()
        prev = self._prev_b
        i0, i1 = self._since("ends", self.ends, b)
        lats = self.lats[i0:i1]
        e0, e1 = self._since("errors", self.err_ts, b)
        s0, s1 = self._since("sends", self.send_ts, b)
        c0, c1 = self._since("capped", self.capped_ts, b)
        l0, l1 = self._since("lag", self.lag_ts, b)
        duration_ns = max(1, b - prev)
        share = self.share
        late = self.late[s0:s1]
        lag = self.lag[l0:l1]
        cpu_s = now_cpu - self._prev_cpu
        wall_s = max(1e-9, (now_wall - self._prev_wall) / 1e9)
        client = {
            "mode": share.spec.mode,
            "arrivals": share.spec.arrivals if share.rate > 0 else "closed",
            "target": share.rate if share.rate > 0 else float(share.concurrency),
            "achieved": ((s1 - s0) / (duration_ns / 1e9)) if share.rate > 0 else float(sum(lats)) / duration_ns,
            "scheduled": None,
            "sent": (s1 - s0) if share.rate > 0 else (i1 - i0) + (e1 - e0),
            "late_sends": (int(np.count_nonzero(np.frombuffer(late, dtype=np.int64) > LATE_SEND_MS * 1e6))
                           if share.rate > 0 else None),
            "late_p99_ms": _pct_ms(late, 99) if share.rate > 0 else None,
            "capped_sends": (c1 - c0) if share.rate > 0 else None,
            "inflight": self.inflight if not self.streamer else len(self.streamer.pending),
            "loop_lag_p99_ms": _pct_ms(lag, 99),
            "loop_lag_max_ms": (max(lag) / 1e6) if len(lag) else None,
            "cpu_s": cpu_s,
            "cpu_util_max": cpu_s / wall_s,
            "checked": self.checker.checked - self._prev_checked,
            "workers": 1,
        }
        if self.schedule is not None:
            n = self.schedule.count_before(b)
            client["scheduled"] = n - self._prev_sched
            self._prev_sched = n
        window = WindowSample(
            start_s=prev / 1e9,
            duration_s=duration_ns / 1e9,
            latencies_us=_us(lats),
            errors=e1 - e0,
            client=client,
        )
        if self.stream:  # the stream parses and checks every response
            responses = int(sum(self.nresp[i0:i1]))
            client["checked"] = responses
            if self.plan.decoupled:  # else first response = the response: nothing to add
                window.first_response_us = _us(self.firsts[i0:i1])
                window.responses = responses
        self._prev_b = b
        self._prev_cpu, self._prev_wall = now_cpu, now_wall
        self._prev_checked = self.checker.checked
        return window


class _Streamer:
    """Requests over one bidirectional ModelStreamInfer stream (decoupled models).

    Each request gets an id (appended to the serialized request: a later
    field wins in protobuf) so responses can be matched; Triton flags each
    request's final response (`triton_final_response`, asked for with the
    request parameter `triton_enable_empty_final_response`). Latency runs from
    when the request was queued to be written (its scheduled time in open
    loop), to the first response and to the final one.
    """

    def __init__(self, engine: _Engine):
        self.e = engine
        self.payload = stream_payload(engine.plan.payload)
        self.expected = engine.plan.expected_outputs
        self.decoupled = engine.plan.decoupled
        self.pending: dict[str, list] = {}  # id -> [t_sched, t_first, responses, problem]
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seq = 0
        self.concurrency = 0
        self.call = None

    def send(self, t_sched: int) -> None:
        self.seq += 1
        rid = str(self.seq)
        b = rid.encode()
        self.pending[rid] = [t_sched, 0, 0, None]
        self.e.inflight = len(self.pending)
        self.queue.put_nowait(self.payload + b"\x1a" + bytes((len(b),)) + b)

    async def _requests(self, queue: asyncio.Queue):
        while True:
            item = await queue.get()
            if item is None:
                return
            yield item

    async def run(self, concurrency: int) -> None:
        """Read responses until stopped; reopen the stream after a failure."""
        e = self.e
        self.concurrency = concurrency
        first = True
        while e.running:
            if not first:  # after a failure: a new stream, nothing outstanding
                self.queue = asyncio.Queue()
                self.pending.clear()
            first = False
            for _ in range(concurrency):
                self.send(time.perf_counter_ns())
            self.call = e.client._stream(self._requests(self.queue), timeout=None, metadata=e.client._metadata)
            try:
                async for raw in self.call:
                    self._handle(raw)
                detail, kind = "the server ended the stream", "STREAM_ENDED"
            except grpc.aio.AioRpcError as err:
                kind, detail = err.code().name, err.details() or ""
            if not e.running:
                return
            for _ in range(max(1, len(self.pending))):
                e.error(kind, detail)
            self.pending.clear()
            e.inflight = 0
            await asyncio.sleep(0.05)

    def close(self) -> None:
        self.queue.put_nowait(None)
        if self.call is not None:
            self.call.cancel()

    def _handle(self, raw: bytes) -> None:
        t = time.perf_counter_ns()
        e = self.e
        r = service_pb2.ModelStreamInferResponse.FromString(raw)
        ir = r.infer_response
        pending = self.pending
        st = pending.get(ir.id)
        if r.error_message:
            rid = ir.id if st is not None else next(iter(pending), None)
            if rid is None:
                return
            del pending[rid]
            e.error("STREAM_ERROR", r.error_message)
            self._next()
            return
        if st is None:
            return  # a request already given up on
        if len(ir.outputs):
            st[2] += 1
            if not st[1]:
                st[1] = t
            if st[3] is None:
                st[3] = check_parsed(ir, self.expected)
        flag = ir.parameters.get("triton_final_response")
        final = flag.bool_param if flag is not None else not self.decoupled
        if not final:
            return
        del pending[ir.id]
        if st[3] is not None:
            e.error("BAD_OUTPUT", st[3])
        elif st[2] == 0 and not self.decoupled:
            e.error("BAD_OUTPUT", "final response without outputs")
        else:
            e.ends.append(t)
            e.lats.append(t - st[0])
            e.firsts.append((st[1] or t) - st[0])
            e.nresp.append(st[2])
        self._next()

    def _next(self) -> None:
        e = self.e
        e.inflight = len(self.pending)
        if self.concurrency and e.running:
            self.send(time.perf_counter_ns())


# ------------------------------------------------------------------ client ---

class LoadClient:
    """One gRPC channel to a server (and load processes when asked), reused across load points.

    `url` is host:port or a `connection.Connection` (TLS, request headers);
    `metrics_url` is the server's Prometheus endpoint (None: no telemetry).
    """

    def __init__(self, url: "str | Connection", model: str, version: str = "", metrics_url: str | None = None):
        self.connection = as_connection(url)
        self.url = self.connection.url
        self.model = model
        self.version = version
        self.metrics_url = metrics_url
        self.channel: grpc.aio.Channel | None = None
        self._pool = None
        self._metrics_off_until = 0.0

    async def __aenter__(self) -> "LoadClient":
        self.channel = self.connection.aio_channel()
        self._metadata = self.connection.metadata() or None
        self._infer = self.channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
        self._stream = self.channel.stream_stream(STREAM_METHOD, request_serializer=None,
                                                  response_deserializer=None)
        self._stats = self.channel.unary_unary(
            STATS_METHOD,
            request_serializer=service_pb2.ModelStatisticsRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStatisticsResponse.FromString,
        )
        self._stats_req = service_pb2.ModelStatisticsRequest(name=self.model, version=self.version)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        if self.channel is not None:
            await self.channel.close()

    async def statistics(self) -> service_pb2.ModelStatisticsResponse | None:
        try:
            return await self._stats(self._stats_req, timeout=5.0, metadata=self._metadata)
        except grpc.aio.AioRpcError:
            return None  # a breakdown is "not available", never a failed point

    async def telemetry(self) -> telemetry.Snapshot | None:
        """One scrape of the server's metrics; None (and a pause) when not available."""
        if not self.metrics_url or time.monotonic() < self._metrics_off_until:
            return None
        loop = asyncio.get_running_loop()
        snap = await loop.run_in_executor(None, telemetry.scrape, self.metrics_url, self.model, self.version)
        if snap is None:
            self._metrics_off_until = time.monotonic() + 30.0  # don't wait on a dead endpoint every window
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
        if settings.ray_address:
            return await self._run_ray(plan, spec, settings)
        n = resolve_workers(spec, settings)
        if n > 1:
            from .workers import WorkerPool

            if self._pool is None or self._pool.n != n:
                if self._pool is not None:
                    await self._pool.close()
                    self._pool = None
                pool = WorkerPool(self.connection, self.model, self.version, n)
                await pool.start()
                self._pool = pool
            try:
                return await self._measure(spec, settings, self._pool.source(plan, spec, settings), n)
            except BaseException:
                pool, self._pool = self._pool, None  # its processes may be mid-point: start afresh
                await pool.close()
                raise
        return await self._measure(spec, settings, _LocalSource(self, plan, spec, settings), n)

    async def _run_ray(self, plan: RequestPlan, spec: LoadSpec, settings: LoadSettings) -> PointSamples:
        from .distributed import RayPool

        key = (settings.ray_address, max(0, settings.workers))
        if self._pool is None or getattr(self._pool, "key", None) != key:
            if self._pool is not None:
                await self._pool.close()
                self._pool = None
            pool = RayPool(self.connection, self.model, self.version, settings.ray_address, key[1])
            pool.key = key
            await pool.start()
            self._pool = pool
        try:
            return await self._measure(spec, settings, self._pool.source(plan, spec, settings), self._pool.n)
        except BaseException:
            pool, self._pool = self._pool, None
            await pool.close()
            raise

    async def _measure(self, spec: LoadSpec, settings: LoadSettings, source, n: int) -> PointSamples:
        result = PointSamples(concurrency=spec.concurrency if spec.rate <= 0 else 0,
                              request_rate=spec.rate if spec.rate > 0 else None,
                              arrivals=spec.arrivals if spec.rate > 0 else "closed", workers=n)
        window_ns = int(settings.window_s * 1e9)
        t_start = time.perf_counter_ns() + source.start_delay_ns
        await source.start(t_start)
        try:
            b = t_start + int(settings.warmup_s * 1e9)
            await source.window(0, b)  # the warm-up: discarded
            stats_before = await self.statistics()
            tele_before = await self.telemetry()
            k = 0
            while True:
                k += 1
                b += window_ns
                window = await source.window(k, b)
                if window is None:  # the load stopped (every request path died)
                    break
                stats_after = await self.statistics()
                tele_after = await self.telemetry()
                window.server = _server_delta(stats_before, stats_after)
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


class _LocalSource:
    """The load of a point in this process and event loop."""

    start_delay_ns = 1_000_000

    def __init__(self, client: LoadClient, plan: RequestPlan, spec: LoadSpec, settings: LoadSettings):
        self.engine = _Engine(client, plan, settings, spec.share(0, 1))

    async def start(self, t_start: int) -> None:
        self.engine.start(t_start)

    async def window(self, k: int, b: int) -> WindowSample | None:
        await asyncio.sleep(max(0.0, (b - time.perf_counter_ns()) / 1e9))
        eng = self.engine
        if eng.crashed is not None:
            raise LoadError(f"the load generator failed: {eng.crashed!r}") from eng.crashed
        if not eng.alive():
            return None
        return eng.cut(b)

    async def stop(self) -> None:
        await self.engine.stop()
        if self.engine.crashed is not None:
            raise LoadError(f"the load generator failed: {self.engine.crashed!r}") from self.engine.crashed

    def errors(self) -> tuple[dict[str, int], str]:
        return dict(self.engine.error_kinds), self.engine.first_error

    def worker_windows(self) -> None:
        return None
