"""What a load point sends, and how every response is checked.

A request is built once from the model's config (`build_request`) and
serialized; the load sends the same bytes every time. Responses are checked
for every declared output at its byte size (`check_response`), fully or by
byte length against responses already fully checked (`ResponseChecker`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from tuner.errors import LoadError

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
