"""What the requests carry: the user's own input data, shape mixes and client-side batches.

An `InputSpec` says where request data comes from; `request.build_request`
binds it to the model's config and serializes every distinct request once.

Input data (`[model] input_data = "PATH"`, `--input-data PATH`) is either

1. a JSON file in perf_analyzer's input-data format, so existing files work:

       {"data": [                                   # entries, used in order and cycled
          {"INPUT0": [1, 2, 3, 4]},                 # flattened values, row-major
          {"INPUT0": {"b64": "AAAAAA=="}},          # little-endian raw bytes, base64
          {"INPUT0": {"content": [1, 2, 3, 4, 5, 6], "shape": [2, 3]}},
          {"INPUT0": {"content": {"b64": "..."}, "shape": [7]}},
          {"TEXT": ["a sentence", "another one"]}   # BYTES/string inputs: JSON strings
       ]}

   Each entry holds one item (batch 1) of every input the model requires;
   shapes exclude the batch dimension. An input's shape is the entry's
   "shape", else the model's dims when fixed, else the profile's/`--shape`
   shape for it, else inferred (nested lists; or the one variable dim from
   the element count). b64 content of a BYTES input is Triton's wire form
   (each element a 4-byte little-endian length, then its bytes).
   "validation_data" is accepted and not used; sequence streams (a list of
   lists under "data") are refused.

2. a folder of NumPy files: either `.npz` files, one entry each (taken in
   name order; arrays named after the inputs), or one `<INPUT>.npy` file per
   input whose first axis runs over the entries (all with the same count).
   String arrays feed BYTES inputs; other arrays must have the model's data
   type or one that converts to it exactly (int32 -> INT64, float32 -> FP64).

With a client-side batch (`batch_size` b > 1), each request carries b
consecutive entries (cycled), which must then share their shapes: Triton
batches a request's items as one tensor.

Shape mixes without data files: `[model.shapes]` gives each input either a
shape (`INPUT0 = [128]`) or a weighted list of shapes
(`INPUT0 = [{dims = [128], weight = 2}, {dims = [256], weight = 1}]`).
Each input's shape is chosen independently (a combination's weight is the
product of its shapes' weights); every distinct combination is one
serialized request with random (or zero) data. Requests follow a seeded
sequence, the same on every run, made of shuffled blocks that each hold the
combinations in proportion to their weights, so every window sees the mix. Inputs whose lengths must agree (token ids and
their mask) need an input-data file, whose entries keep them together.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tuner.errors import LoadError

MAX_SHAPES_PER_INPUT = 64


@dataclass(frozen=True)
class ShapeChoice:
    """One shape of an input (batch dimension excluded) and its relative weight."""

    dims: tuple[int, ...]
    weight: float = 1.0


@dataclass(frozen=True)
class InputSpec:
    """Where a load's request data comes from (see the module docstring)."""

    data: str = "random"  # "random" | "zeros": generated data (when no data_path)
    data_path: Path | None = None  # perf_analyzer-format JSON file, or a folder of .npy/.npz files
    shapes: dict[str, tuple[ShapeChoice, ...]] = field(default_factory=dict)  # per input
    batch_size: int = 1  # items per request (client-side batch); > 1 needs max_batch_size > 0
    seed: int = 0  # random data and the shape draw
    sequence_length: int = 0  # sequence models: requests per sequence (0: load/sequence.py's default)


@dataclass(frozen=True)
class RawTensor:
    """One input of one entry as the data source gave it, before the model's data type is known."""

    values: np.ndarray | None = None  # JSON values or a NumPy array (nested: its shape is the shape)
    raw: bytes | None = None  # b64: bytes in Triton's wire form
    shape: tuple[int, ...] | None = None  # the entry's "shape", when given
    typed: bool = False  # a NumPy array: its data type must convert to the model's exactly


@dataclass(frozen=True)
class DataSet:
    """Entries read from an input-data file or folder, in the order they are sent."""

    entries: tuple[dict[str, RawTensor], ...]
    sha256: str  # of the file, or of the folder's files in name order
    source: str  # the path as given


# ------------------------------------------------------------ shape mixes ---

def _dims(value, what: str) -> tuple[int, ...]:
    if (not isinstance(value, (list, tuple)) or not value
            or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in value)):
        raise ValueError(f"{what} must be a list of positive integers (the per-request dims), got {value!r}")
    return tuple(int(d) for d in value)


def parse_shape_mix(value) -> tuple[ShapeChoice, ...]:
    """`[128]` or `[{dims = [128], weight = 2}, ...]` -> shape choices; ValueError names the fix."""
    if isinstance(value, (list, tuple)) and value and all(isinstance(x, dict) for x in value):
        if len(value) > MAX_SHAPES_PER_INPUT:
            raise ValueError(f"at most {MAX_SHAPES_PER_INPUT} shapes per input, got {len(value)}")
        out = []
        for i, item in enumerate(value):
            unknown = set(item) - {"dims", "weight"}
            if unknown or "dims" not in item:
                raise ValueError(f"shape {i + 1} must be {{dims = [...], weight = W}}, got {item!r}")
            weight = item.get("weight", 1)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0:
                raise ValueError(f"shape {i + 1}: weight must be a number > 0, got {weight!r}")
            out.append(ShapeChoice(_dims(item["dims"], f"shape {i + 1}: dims"), float(weight)))
        if len({c.dims for c in out}) != len(out):
            raise ValueError("the same dims are listed twice; give each shape once with its weight")
        return tuple(out)
    return (ShapeChoice(_dims(value, "the shape"), 1.0),)


def normalize_shapes(shapes: dict | None) -> dict[str, tuple[ShapeChoice, ...]]:
    """Shapes as profiles and older callers give them (dims lists) or as shape choices."""
    out = {}
    for name, value in (shapes or {}).items():
        if isinstance(value, tuple) and value and all(isinstance(c, ShapeChoice) for c in value):
            out[name] = value
        else:
            try:
                out[name] = parse_shape_mix(value)
            except ValueError as err:
                raise LoadError(f"shape of input '{name}': {err}") from None
    return out


def parse_shape_option(items: list[str]) -> dict[str, tuple[ShapeChoice, ...]]:
    """`--shape NAME=D1,D2[@WEIGHT]`, repeatable; the same NAME again adds a shape to its mix."""
    acc: dict[str, list[ShapeChoice]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        dims_text, _, weight_text = rest.partition("@")
        try:
            dims = tuple(int(d) for d in dims_text.split(","))
            weight = float(weight_text) if weight_text else 1.0
        except ValueError:
            dims, weight = (), 0.0
        if not sep or not name.strip() or not dims or min(dims) < 1 or not weight > 0:
            raise ValueError(f"--shape takes NAME=D1,D2 or NAME=D1,D2@WEIGHT (positive integers), got '{item}'")
        acc.setdefault(name.strip(), []).append(ShapeChoice(dims, weight))
    return {k: tuple(v) for k, v in acc.items()}


def draw_order(weights: list[float], seed: int, length: int = 4096) -> tuple[int, ...]:
    """A seeded sequence of choices in proportion to `weights`, cycled by the load.

    Shuffled blocks, each holding every choice in proportion (at least once), rather
    than independent draws: a short window then sees the mix asked for, not a sample
    of it that wanders by a few percent."""
    if len(weights) <= 1:
        return (0,)
    p = np.asarray(weights, dtype=np.float64)
    p = p / p.sum()
    block = int(min(length, max(100, math.ceil(10 / p.min()))))  # the rarest choice ~10 times a block
    exact = p * block
    counts = np.maximum(1, np.floor(exact)).astype(int)
    for i in np.argsort(exact - np.floor(exact))[::-1][:max(0, block - int(counts.sum()))]:
        counts[i] += 1  # largest remainders first
    base = np.repeat(np.arange(len(p)), counts)
    rng = np.random.default_rng(seed)
    return tuple(int(x) for _ in range(max(1, length // block)) for x in rng.permutation(base))


# ------------------------------------------------------------- data files ---

def read_data(path: Path | str) -> DataSet:
    """Entries of a perf_analyzer-format JSON file or a folder of .npy/.npz files."""
    p = Path(path)
    if p.is_dir():
        return _read_numpy_folder(p)
    try:
        raw = p.read_bytes()
    except OSError as err:
        raise LoadError(f"input data {p}: cannot read it ({err.strerror or err}); give a JSON file in "
                        "perf_analyzer's format or a folder of .npy/.npz files") from None
    try:
        doc = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LoadError(f"input data {p}: not valid JSON ({err}); give a file in perf_analyzer's "
                        'input-data format: {"data": [{"INPUT0": [...]}, ...]}') from None
    entries = _json_entries(doc, str(p))
    return DataSet(tuple(entries), hashlib.sha256(raw).hexdigest(), str(p))


def _json_entries(doc, where: str) -> list[dict[str, RawTensor]]:
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list) or not doc["data"]:
        raise LoadError(f'input data {where}: needs a non-empty "data" list: {{"data": [{{"INPUT0": [...]}}, ...]}}')
    out = []
    for i, entry in enumerate(doc["data"]):
        if isinstance(entry, list):
            raise LoadError(f"input data {where}: entry {i + 1} is a list (a sequence stream); sequence "
                            "streams are not supported: give one flat list of entries under \"data\"")
        if not isinstance(entry, dict) or not entry:
            raise LoadError(f'input data {where}: entry {i + 1} must map input names to data, got {entry!r:.60}')
        out.append({name: _json_tensor(value, f"input data {where}: entry {i + 1}, input '{name}'")
                    for name, value in entry.items()})
    return out


def _json_tensor(value, where: str) -> RawTensor:
    shape = None
    if isinstance(value, dict) and "content" in value:
        unknown = set(value) - {"content", "shape"}
        if unknown:
            raise LoadError(f"{where}: unknown key(s) {sorted(unknown)}; use \"content\" and \"shape\"")
        if "shape" in value:
            shape = _entry_shape(value["shape"], where)
        value = value["content"]
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise LoadError(f'{where}: give a list of values, {{"b64": "..."}} or {{"content": ..., "shape": [...]}}')
        try:
            return RawTensor(raw=base64.b64decode(value["b64"], validate=True), shape=shape)
        except (binascii.Error, ValueError):
            raise LoadError(f"{where}: \"b64\" is not valid base64; encode the raw little-endian bytes") from None
    if not isinstance(value, list):
        value = [value]
    try:
        arr = np.asarray(value)
    except ValueError:
        raise LoadError(f"{where}: nested lists of unequal lengths; flatten the values (row-major) and "
                        'give "shape"') from None
    if arr.dtype == object:
        raise LoadError(f"{where}: mixes strings, numbers or lists; give one kind of value")
    return RawTensor(values=arr, shape=shape)


def _entry_shape(value, where: str) -> tuple[int, ...]:
    if (not isinstance(value, list) or any(isinstance(d, bool) or not isinstance(d, int) or d < 0
                                           for d in value)):
        raise LoadError(f'{where}: "shape" must be a list of non-negative integers, got {value!r}')
    return tuple(value)


def _read_numpy_folder(folder: Path) -> DataSet:
    npz = sorted(folder.glob("*.npz"))
    npy = sorted(folder.glob("*.npy"))
    if npz and npy:
        raise LoadError(f"input data {folder}: holds both .npz and .npy files; use .npz files (one entry "
                        "each) or one <INPUT>.npy per input, not both")
    if not npz and not npy:
        raise LoadError(f"input data {folder}: no .npy or .npz files in it; give a JSON file in "
                        "perf_analyzer's format or a folder of NumPy files")
    digest = hashlib.sha256()
    for f in npz or npy:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    try:
        if npz:
            entries = []
            for f in npz:
                with np.load(f, allow_pickle=False) as z:
                    entries.append({name: RawTensor(values=z[name], typed=True) for name in z.files})
        else:
            arrays = {f.stem: np.load(f, allow_pickle=False) for f in npy}
            counts = {name: (a.shape[0] if a.ndim else 0) for name, a in arrays.items()}
            if len(set(counts.values())) != 1 or 0 in counts.values():
                raise LoadError(f"input data {folder}: each <INPUT>.npy needs the same number of entries "
                                f"on its first axis, got {counts}")
            n = next(iter(counts.values()))
            entries = [{name: RawTensor(values=a[k], typed=True) for name, a in arrays.items()} for k in range(n)]
    except (OSError, ValueError) as err:
        raise LoadError(f"input data {folder}: cannot read a NumPy file ({err}); save arrays with "
                        "numpy.save / numpy.savez (no pickled objects)") from None
    return DataSet(tuple(entries), digest.hexdigest(), str(folder))
