"""Tensor bytes in Triton's wire form: generated (random, zeros) or from the user's data.

Numbers are little-endian, row-major; BYTES elements are a 4-byte
little-endian length, then the bytes; BF16 is the upper half of FP32.
"""

from __future__ import annotations

import math

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from tuner.errors import LoadError
from tuner.load.inputs import RawTensor

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

DTYPES_BY_WIRE = {wire: size for wire, size in DTYPES.values()}

NUMPY = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32,
    "INT64": np.int64, "FP16": np.float16, "FP32": np.float32, "FP64": np.float64,
}


def generated(wire: str, shape: list[int], data: str, rng: np.random.Generator) -> bytes:
    """Random or zero data for a tensor of `shape` (batch dimension included)."""
    n = int(math.prod(shape))
    if wire == "BYTES":
        item = b"0" * 8 if data == "zeros" else b"tuner-in"
        return (len(item).to_bytes(4, "little") + item) * n
    if wire == "BF16":
        if data == "zeros":
            return bytes(2 * n)
        f32 = rng.standard_normal(n).astype(np.float32)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    dtype = NUMPY[wire]
    if data == "zeros":
        return np.zeros(n, dtype=dtype).tobytes()
    if wire == "BOOL":
        return rng.integers(0, 2, n).astype(np.bool_).tobytes()
    if wire.startswith("FP"):
        return rng.standard_normal(n).astype(dtype).tobytes()
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -100), min(info.max, 100), n, dtype=dtype).tobytes()


def bytes_elements(raw: bytes) -> int | None:
    """How many elements a BYTES buffer in wire form holds; None when it is not in that form."""
    n, at = 0, 0
    while at < len(raw):
        if at + 4 > len(raw):
            return None
        at += 4 + int.from_bytes(raw[at:at + 4], "little")
        n += 1
    return n if at == len(raw) else None


def resolve_shape(t: RawTensor, dims: list[int], default: tuple[int, ...] | None, wire: str,
                  where: str) -> tuple[int, ...]:
    """The per-item shape of one entry's input: its own, the model's fixed dims, the default, or inferred."""
    if t.shape is not None:
        shape = t.shape
    elif t.values is not None and t.values.ndim > 1:
        shape = tuple(t.values.shape)  # nested lists, or an array per entry: their own shape
    elif all(d >= 0 for d in dims):
        shape = tuple(dims)
    elif default is not None:
        shape = default
    else:
        count = _count(t, wire, where)
        known = math.prod(d for d in dims if d >= 0)
        if sum(1 for d in dims if d < 0) != 1 or known == 0 or count % known:
            raise LoadError(f"{where}: the model's dims {dims} are variable and the entry gives no \"shape\"; "
                            "add \"shape\": [...] to the entry, or give the input's shape ([model.shapes] / --shape)")
        shape = tuple(count // known if d < 0 else d for d in dims)
    check_fits(shape, dims, where)
    return shape


def check_fits(shape: tuple[int, ...], dims: list[int], where: str) -> None:
    """A per-item shape against the model's dims (-1: any size)."""
    if len(shape) != len(dims) or any(d >= 0 and d != s for d, s in zip(dims, shape)):
        raise LoadError(f"{where}: shape {list(shape)} does not fit the model's dims {dims}; give a shape "
                        "(without the batch dimension) that does")


def _count(t: RawTensor, wire: str, where: str) -> int:
    if t.values is not None:
        return int(t.values.size)
    if wire == "BYTES":
        n = bytes_elements(t.raw)
        if n is None:
            raise LoadError(f"{where}: b64 content of a BYTES input must be Triton's wire form (each element "
                            "a 4-byte little-endian length, then its bytes)")
        return n
    size = DTYPES_BY_WIRE[wire]
    if len(t.raw) % size:
        raise LoadError(f"{where}: {len(t.raw)} bytes is not a whole number of {wire} elements ({size} bytes each)")
    return len(t.raw) // size


def from_data(t: RawTensor, wire: str, shape: tuple[int, ...], where: str) -> bytes:
    """One entry's input as wire bytes, checked against its shape and the model's data type."""
    n = int(math.prod(shape))
    got = _count(t, wire, where)
    if got != n:
        raise LoadError(f"{where}: {got} elements for shape {list(shape)} ({n}); fix the content or its \"shape\"")
    if t.raw is not None:
        return t.raw
    arr = t.values
    if wire == "BYTES":
        if arr.dtype.kind not in "US":
            raise LoadError(f"{where}: the model takes BYTES (strings); give JSON strings or a string array, "
                            f"got {arr.dtype.name} values")
        items = [x.encode("utf-8") if isinstance(x, str) else bytes(x) for x in arr.reshape(-1).tolist()]
        return b"".join(len(x).to_bytes(4, "little") + x for x in items)
    if arr.dtype.kind in "USO":
        raise LoadError(f"{where}: the model takes {wire}; give numbers, got strings")
    if wire == "BF16":
        f32 = _convert(arr, np.float32, "BF16", where, t.typed)
        return (f32.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return _convert(arr, NUMPY[wire], wire, where, t.typed).tobytes()


def _convert(arr: np.ndarray, dtype, wire: str, where: str, typed: bool) -> np.ndarray:
    """`arr` as `dtype`. A typed array (NumPy file) must convert exactly by its type; JSON numbers
    (parsed as int64 / float64) are refused when a value would change (a fraction, out of range)."""
    target = np.dtype(dtype)
    flat = arr.reshape(-1)
    if flat.dtype == target:
        return np.ascontiguousarray(flat)
    if typed:
        if not np.can_cast(flat.dtype, target, "safe"):
            raise LoadError(f"{where}: the array is {flat.dtype.name} and the model takes {wire}; save it as "
                            f"{target.name} (array.astype(numpy.{target.name}))")
        return flat.astype(target)
    if target.kind in "iub":
        if flat.dtype.kind == "f" and not np.all(np.isfinite(flat) & (flat == np.round(flat))):
            raise LoadError(f"{where}: the model takes {wire} (integers); the data has fractions")
        if target.kind == "b":
            if not np.all((flat == 0) | (flat == 1)):
                raise LoadError(f"{where}: the model takes BOOL; give true/false or 0/1")
        elif flat.size:
            info = np.iinfo(target)
            if flat.min() < info.min or flat.max() > info.max:
                raise LoadError(f"{where}: values outside {wire}'s range [{info.min}, {info.max}]")
    return flat.astype(target)
