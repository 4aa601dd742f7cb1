"""What a load point sends, and how every response is checked.

`build_request` binds an `inputs.InputSpec` (generated data in one shape or a
weighted shape mix, or the user's input-data file; a client-side batch) to
the model's config and serializes every distinct request once, before the
load starts, into a pool: `RequestPlan.payloads`. The load cycles through
`RequestPlan.order` (payload indices), so sending costs an index, never an
encoding. Each payload has its own expected outputs: declared byte sizes
for fixed dims; an output declared with exactly the dims of one input
(e.g. both [-1]) is expected at that input's shape in the request; other
variable outputs must be non-empty. Responses are checked per payload
(`check_response` fully, `ResponseChecker` by byte length against
responses of the same payload already fully checked).

The plan's `mix` is what the results record as the environment's
`input_mix` (see `tuner/results/environment.py`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2

from tuner.errors import LoadError
from tuner.load.inputs import DataSet, InputSpec, draw_order, normalize_shapes, read_data
from tuner.load.sequence import DEFAULT_LENGTH, SequencePlan
from tuner.load.tensors import DTYPES, check_fits, from_data, generated, resolve_shape

__all__ = ["DTYPES", "RequestPlan", "ResponseChecker", "build_request", "check_parsed", "check_response",
           "stream_payload"]

Expected = tuple[tuple[str, int], ...]  # (output name, byte size; -1 = any non-empty)
MAX_COMBINATIONS = 256  # distinct shape combinations of a generated mix


@dataclass(frozen=True)
class RequestPlan:
    """Every distinct request serialized once, the order they are sent in, and what each response must carry."""

    payloads: tuple[bytes, ...]
    expected: tuple[Expected, ...]  # per payload
    order: tuple[int, ...] = (0,)  # payload indices in sending order, cycled
    shape_of: tuple[int, ...] = (0,)  # payload -> index of its request shape in mix["shapes"]
    batch_size: int = 1  # items per request
    decoupled: bool = False  # model_transaction_policy { decoupled: true }: the stream only
    mix: dict = field(default_factory=dict)  # the input mix, as the environment records it
    sequence: SequencePlan | None = None  # a sequence_batching model: requests go in sequences (sequence.py)

    @property
    def payload(self) -> bytes:
        return self.payloads[0]

    @property
    def expected_outputs(self) -> Expected:
        return self.expected[0]

    @property
    def shapes(self) -> int:
        """Distinct request shapes: more than one and each latency records its request's shape."""
        return len(self.mix.get("shapes") or ()) or 1


@dataclass(frozen=True)
class _Request:
    """One distinct request before serialization."""

    tensors: tuple[tuple[str, str, tuple[int, ...], bytes], ...]  # name, wire type, full shape, bytes
    item_shapes: dict[str, tuple[int, ...]]  # per input, without the batch dimension
    weight: float = 1.0


def stream_payload(payload: bytes) -> bytes:
    """The request for the stream: asks Triton to flag each request's final response."""
    req = service_pb2.ModelInferRequest.FromString(payload)
    req.parameters["triton_enable_empty_final_response"].bool_param = True
    return req.SerializeToString()


def build_request(cfg: mc.ModelConfig, model: str, version: str = "", shapes: dict | None = None,
                  data: str = "random", seed: int = 0, batch_size: int = 1, *,
                  inputs: InputSpec | None = None) -> RequestPlan:
    """The requests of a load from the model's config: `inputs`, or generated data in `shapes`."""
    spec = inputs or InputSpec(data=data, shapes=normalize_shapes(shapes), batch_size=batch_size, seed=seed)
    _check_spec(cfg, spec, model)
    dataset = read_data(spec.data_path) if spec.data_path is not None else None
    if dataset is not None:
        requests, order = _from_dataset(cfg, spec, dataset), None
    else:
        requests = _generated(cfg, spec)
        order = draw_order([r.weight for r in requests], spec.seed)
    order = order or tuple(range(len(requests)))
    labels = _labels([r.item_shapes for r in requests])
    names = list(dict.fromkeys(labels))
    shape_of = tuple(names.index(label) for label in labels)
    weights = [0.0] * len(names)
    for r, s in zip(requests, shape_of):
        weights[s] += r.weight
    total = sum(weights) or 1.0
    payloads = tuple(_serialize(r, model, version) for r in requests)
    b = spec.batch_size
    mix = {
        "source": "file" if dataset is not None else spec.data,
        "data_file": Path(dataset.source).name if dataset is not None else None,
        "data_sha256": dataset.sha256 if dataset is not None else None,
        "entries": len(dataset.entries) if dataset is not None else None,
        "batch_size": b,
        "seed": spec.seed if dataset is None else None,
        "shapes": [{"shape": n, "weight": round(w / total, 6)} for n, w in zip(names, weights)],
    }
    sequence = _sequence_plan(cfg, spec, model)
    if sequence is not None:  # a baseline or a check must then be measured with the same sequences
        mix["sequence_length"] = sequence.length
    return RequestPlan(payloads, tuple(_expected(cfg, r.item_shapes, b) for r in requests), order, shape_of, b,
                       decoupled=bool(cfg.model_transaction_policy.decoupled), mix=mix, sequence=sequence)


def _sequence_plan(cfg: mc.ModelConfig, spec: InputSpec, model: str) -> SequencePlan | None:
    """How requests chain into sequences: for a model with sequence_batching only."""
    if not cfg.HasField("sequence_batching"):
        if spec.sequence_length:
            raise LoadError(f"a sequence length is set but '{model}' has no sequence_batching (it is not "
                            "stateful); leave sequence_length / --sequence-length out")
        return None
    if cfg.model_transaction_policy.decoupled:
        raise LoadError(f"'{model}' is a decoupled sequence model; tuner cannot load it yet: measure it with "
                        "perf_analyzer --sequence-length")
    string_ids = any(c.kind == mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID
                     and c.data_type == mc.TYPE_STRING
                     for ci in cfg.sequence_batching.control_input for c in ci.control)
    return SequencePlan(length=spec.sequence_length or DEFAULT_LENGTH, string_ids=string_ids)


def _check_spec(cfg: mc.ModelConfig, spec: InputSpec, model: str) -> None:
    if spec.data not in ("random", "zeros"):
        raise LoadError(f"input data '{spec.data}' is not supported; use random or zeros, or an input-data file")
    names = [t.name for t in cfg.input]
    unknown = set(spec.shapes) - set(names)
    if unknown:
        raise LoadError(f"shape given for unknown input(s) {sorted(unknown)}; the model's inputs are {names}")
    for t in cfg.input:
        if t.data_type not in DTYPES:
            raise LoadError(f"input '{t.name}' has unsupported data type {mc.DataType.Name(t.data_type)}")
    b = spec.batch_size
    if b < 1:
        raise LoadError(f"batch size must be >= 1, got {b}")
    if b > 1 and cfg.max_batch_size <= 0:
        raise LoadError(f"batch size {b} needs a model that batches; '{model}' has max_batch_size 0: "
                        "use batch size 1")
    if b > 1 and b > cfg.max_batch_size:
        raise LoadError(f"batch size {b} is above '{model}''s max_batch_size {cfg.max_batch_size}; "
                        f"use a batch size <= {cfg.max_batch_size}")


def _full(cfg: mc.ModelConfig, item: tuple[int, ...], b: int) -> tuple[int, ...]:
    return ((b,) if cfg.max_batch_size > 0 else ()) + tuple(item)


def _generated(cfg: mc.ModelConfig, spec: InputSpec) -> list[_Request]:
    """One request per combination of the inputs' shapes, with random or zero data."""
    per_input = []
    for t in cfg.input:
        if t.optional and t.name not in spec.shapes:
            continue
        choices = spec.shapes.get(t.name)
        dims = list(t.dims)
        if choices is None:
            if any(d < 0 for d in dims):
                raise LoadError(f"input '{t.name}' has variable dims {dims}; give its shape in the profile "
                                f"([model.shapes] {t.name} = [...]) or with --shape {t.name}=D1,D2, or give "
                                "input data (--input-data)")
            choices = ((tuple(dims), 1.0),)
        else:
            for c in choices:
                check_fits(c.dims, dims, f"shape of input '{t.name}'")
            choices = tuple((c.dims, c.weight) for c in choices)
        per_input.append((t, choices))
    combos = list(itertools.product(*(c for _, c in per_input)))
    if len(combos) > MAX_COMBINATIONS:
        raise LoadError(f"the shape mix has {len(combos)} combinations (more than {MAX_COMBINATIONS}); "
                        "give fewer shapes, or an input-data file")
    rng = np.random.default_rng(spec.seed)
    out = []
    for combo in combos:
        tensors, items = [], {}
        for (t, _), (dims, _) in zip(per_input, combo):
            wire = DTYPES[t.data_type][0]
            full = _full(cfg, dims, spec.batch_size)
            tensors.append((t.name, wire, full, generated(wire, list(full), spec.data, rng)))
            items[t.name] = tuple(dims)
        out.append(_Request(tuple(tensors), items, math.prod(w for _, w in combo)))
    return out


def _from_dataset(cfg: mc.ModelConfig, spec: InputSpec, ds: DataSet) -> list[_Request]:
    """Requests of b consecutive entries each (cycled), until the order repeats."""
    names = {t.name for t in cfg.input}
    for i, entry in enumerate(ds.entries):
        unknown = set(entry) - names
        if unknown:
            raise LoadError(f"input data {ds.source}: entry {i + 1} names unknown input(s) {sorted(unknown)}; "
                            f"the model's inputs are {sorted(names)}")
    for name, choices in spec.shapes.items():
        if len(choices) > 1:
            raise LoadError(f"[model.shapes] {name} lists {len(choices)} shapes; with input data a shape is only "
                            "the default for entries without one: give one")
    n, b = len(ds.entries), spec.batch_size
    cache: dict[tuple[int, str], tuple[tuple[int, ...], bytes]] = {}
    out = []
    for j in range(n // math.gcd(n, b)):
        idx = [(j * b + k) % n for k in range(b)]
        tensors, items = [], {}
        for t in cfg.input:
            present = [k for k in idx if t.name in ds.entries[k]]
            if not present and t.optional:
                continue
            if len(present) != len(idx):
                k = next(k for k in idx if k not in present)
                raise LoadError(f"input data {ds.source}: entry {k + 1} has no '{t.name}'; every entry needs "
                                f"every input the model requires ({', '.join(sorted(names))})")
            parts = [_entry_tensor(cfg, spec, ds, k, t, cache) for k in idx]
            shapes = {s for s, _ in parts}
            if len(shapes) > 1:
                raise LoadError(f"input data {ds.source}: entries {idx[0] + 1}..{idx[-1] + 1} form one request "
                                f"(batch size {b}) but '{t.name}' has shapes {sorted(map(list, shapes))}; "
                                "order the entries so that each run of b shares a shape, or use batch size 1")
            item = parts[0][0]
            wire = DTYPES[t.data_type][0]
            tensors.append((t.name, wire, _full(cfg, item, b), b"".join(raw for _, raw in parts)))
            items[t.name] = item
        out.append(_Request(tuple(tensors), items))
    return out


def _entry_tensor(cfg, spec: InputSpec, ds: DataSet, k: int, t, cache: dict) -> tuple[tuple[int, ...], bytes]:
    key = (k, t.name)
    if key not in cache:
        wire = DTYPES[t.data_type][0]
        where = f"input data {ds.source}: entry {k + 1}, input '{t.name}'"
        default = spec.shapes[t.name][0].dims if t.name in spec.shapes else None
        raw = ds.entries[k][t.name]
        shape = resolve_shape(raw, list(t.dims), default, wire, where)
        cache[key] = (shape, from_data(raw, wire, shape, where))
    return cache[key]


def _labels(item_shapes: list[dict[str, tuple[int, ...]]]) -> list[str]:
    """Each request's shape in words: the inputs whose shape varies (all of them when none does)."""
    names = list(item_shapes[0]) if item_shapes else []
    varying = [n for n in names if len({s.get(n) for s in item_shapes}) > 1] or names
    return [" ".join(f"{n}={list(s[n])}" for n in varying if n in s) for s in item_shapes]


def _serialize(r: _Request, model: str, version: str) -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for name, wire, shape, raw in r.tensors:
        req.inputs.add(name=name, datatype=wire, shape=list(shape))
        req.raw_input_contents.append(raw)
    return req.SerializeToString()


def _expected(cfg: mc.ModelConfig, item_shapes: dict[str, tuple[int, ...]], b: int) -> Expected:
    out = []
    for t in cfg.output:
        _, size = DTYPES.get(t.data_type, ("", 0))
        dims = list(t.dims)
        if any(d < 0 for d in dims):
            # an output declared like exactly one input (e.g. [-1] and [-1]) follows that input's shape
            like = [i.name for i in cfg.input if list(i.dims) == dims and i.name in item_shapes]
            if len(like) == 1:
                dims = list(item_shapes[like[0]])
        if size == 0 or any(d < 0 for d in dims):
            out.append((t.name, -1))
        else:
            out.append((t.name, math.prod(dims) * (b if cfg.max_batch_size > 0 else 1) * size))
    return tuple(out)


# ---------------------------------------------------------------- checks ---

def check_parsed(resp: service_pb2.ModelInferResponse, expected: Expected) -> str | None:
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


def check_response(raw: bytes, expected: Expected) -> str | None:
    """None when the serialized response carries every expected output; else the problem."""
    return check_parsed(service_pb2.ModelInferResponse.FromString(raw), expected)


class ResponseChecker:
    """Checks every response against its own request's expectation, parsing only a sample.

    A response is fully parsed and checked (`check_response`) when its byte
    length is new for its payload, and one in `every` otherwise; the rest are
    checked by byte length against responses to the same payload that passed
    the full check. For a fixed request a good response always has the same
    length, and an empty or mis-sized output changes it, so no bad response
    passes as good. `per_payload` (one expectation per payload) replaces
    `expected` when given; calls then name the payload. `full_check` parses
    a response of the wire in use (`check_response` for gRPC, `http.check_http`).
    """

    __slots__ = ("expected", "every", "good", "n", "checked", "full_check")
    MAX_LENGTHS = 16  # outputs of variable size: at most this many known-good lengths per payload

    def __init__(self, expected: Expected, every: int = 16, per_payload: tuple[Expected, ...] | None = None,
                 full_check=check_response):
        self.full_check = full_check
        self.expected = tuple(per_payload) if per_payload else (expected,)
        self.every = max(1, int(every))
        self.good: list[set[int]] = [set() for _ in self.expected]
        self.n = 0
        self.checked = 0

    def __call__(self, raw: bytes, payload: int = 0) -> str | None:
        size = len(raw)
        good = self.good[payload]
        if size in good:
            self.n += 1
            if self.n < self.every:
                return None
            self.n = 0
        self.checked += 1
        problem = self.full_check(raw, self.expected[payload])
        if problem is None and len(good) < self.MAX_LENGTHS:
            good.add(size)
        return problem
