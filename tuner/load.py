"""Load generation: the only async code in tuner.

Closed-loop load (N requests in flight) over raw gRPC unary calls carrying a
`ModelInferRequest` serialized once, so the hot loop does no per-request
Python work beyond timing and a response check. Every response is checked for
the outputs the model config declares, at the right byte size: an empty or
mis-sized output counts as an error, never a success.

The loop only records (completion time, latency); windows, percentiles and
stability are computed from the stored samples by `stats`.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from .errors import LoadError
from .stats import WindowSample, ServerDelta, is_stable

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
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

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


@dataclass(frozen=True)
class RequestPlan:
    """A request serialized once, and what every response must carry."""

    payload: bytes
    expected_outputs: tuple[tuple[str, int], ...]  # (name, byte size; -1 = any non-empty)
    batch_size: int = 1


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
    return RequestPlan(req.SerializeToString(), tuple(expected), batch_size)


def check_response(raw: bytes, expected: tuple[tuple[str, int], ...]) -> str | None:
    """None when the response carries every expected output; else the problem."""
    resp = service_pb2.ModelInferResponse.FromString(raw)
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


@dataclass
class LoadSettings:
    warmup_s: float = 1.0
    window_s: float = 2.0
    min_windows: int = 3
    max_windows: int = 8
    stability_pct: float = 10.0
    request_timeout_s: float = 30.0


@dataclass
class PointSamples:
    """Raw result of one load point: every window's samples."""

    concurrency: int
    windows: list[WindowSample] = field(default_factory=list)
    stable: bool = False
    error_kinds: dict[str, int] = field(default_factory=dict)
    first_error: str = ""


class _Recorder:
    __slots__ = ("ends_ns", "lat_ns", "errors", "error_kinds", "first_error")

    def __init__(self) -> None:
        self.ends_ns: list[int] = []
        self.lat_ns: list[int] = []
        self.errors: list[int] = []  # completion times of failed requests
        self.error_kinds: dict[str, int] = {}
        self.first_error = ""

    def error(self, kind: str, detail: str) -> None:
        self.errors.append(time.perf_counter_ns())
        self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1
        if not self.first_error:
            self.first_error = f"{kind}: {detail}"[:300]


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


class LoadClient:
    """One gRPC channel to a server, reused across load points."""

    def __init__(self, url: str, model: str, version: str = ""):
        self.url = url
        self.model = model
        self.version = version
        self.channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> "LoadClient":
        self.channel = grpc.aio.insecure_channel(self.url, options=GRPC_OPTIONS)
        self._infer = self.channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
        self._stats = self.channel.unary_unary(
            STATS_METHOD,
            request_serializer=service_pb2.ModelStatisticsRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStatisticsResponse.FromString,
        )
        self._stats_req = service_pb2.ModelStatisticsRequest(name=self.model, version=self.version)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def statistics(self) -> service_pb2.ModelStatisticsResponse | None:
        try:
            return await self._stats(self._stats_req, timeout=5.0)
        except grpc.aio.AioRpcError:
            return None  # a breakdown is "not available", never a failed point

    async def closed_loop(self, plan: RequestPlan, concurrency: int, settings: LoadSettings) -> PointSamples:
        """N requests in flight; warm up, then windows until stable or the limit."""
        rec = _Recorder()
        stop = asyncio.Event()
        infer = self._infer
        payload = plan.payload
        expected = plan.expected_outputs
        timeout = settings.request_timeout_s
        perf = time.perf_counter_ns
        ends, lats = rec.ends_ns, rec.lat_ns

        async def worker() -> None:
            while not stop.is_set():
                t0 = perf()
                try:
                    raw = await infer(payload, timeout=timeout)
                except grpc.aio.AioRpcError as err:
                    rec.error(err.code().name, err.details() or "")
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        await asyncio.sleep(0.05)  # don't spin on a dead server
                    continue
                except asyncio.CancelledError:
                    raise
                t1 = perf()
                problem = check_response(raw, expected)
                if problem is not None:
                    rec.error("BAD_OUTPUT", problem)
                    continue
                ends.append(t1)
                lats.append(t1 - t0)

        tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
        result = PointSamples(concurrency=concurrency)
        try:
            await asyncio.sleep(settings.warmup_s)
            stats_before = await self.statistics()
            t_start = perf()
            n_ok, n_err = len(ends), len(rec.errors)
            while True:
                await asyncio.sleep(settings.window_s)
                if all(t.done() for t in tasks):
                    break
                stats_after = await self.statistics()
                t_end = perf()
                n_ok2, n_err2 = len(ends), len(rec.errors)
                result.windows.append(
                    WindowSample(
                        start_s=t_start / 1e9,
                        duration_s=(t_end - t_start) / 1e9,
                        latencies_us=[x // 1000 for x in lats[n_ok:n_ok2]],
                        errors=n_err2 - n_err,
                        server=_server_delta(stats_before, stats_after),
                    )
                )
                t_start, n_ok, n_err, stats_before = t_end, n_ok2, n_err2, stats_after
                if len(result.windows) >= settings.min_windows and is_stable(
                    result.windows[-settings.min_windows:], settings.stability_pct
                ):
                    result.stable = True
                    break
                if len(result.windows) >= settings.max_windows:
                    break
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        result.error_kinds = dict(rec.error_kinds)
        result.first_error = rec.first_error
        return result
