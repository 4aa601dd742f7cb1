"""Triton's rules for a config's tensors: inputs and outputs, batch inputs and outputs, warmup.

The tensor half of tuner's pre-flight check (`validate.py` holds the rest and
the list of rule families). Each rule yields a `Refusal` naming the field it
is about; `validate.refusals` runs them in the order Triton does.

Sources: Triton core's tensor checks (`ValidateIOShape`, `ValidateModelInput`,
`ValidateModelOutput`, `ValidateBatchIO` in src/model_config_utils.cc), its
warmup sample generation (src/backend_model_instance.cc), the backends' own
batch-size check on every execution, warmup included, and the model
configuration docs ("Inputs and Outputs", "Reshape", "Shape Tensors",
"Non-Linear I/O Formats", ragged batching, model warmup).
"""

from __future__ import annotations

from typing import Iterator

from tritonclient.grpc import model_config_pb2 as mc

from tuner.config.locate import Refusal

TENSORRT = "tensorrt_plan"
BATCH_INPUT_TYPES = (mc.TYPE_INT32, mc.TYPE_FP32)


def io_refusals(cfg: mc.ModelConfig, platform: str | None) -> Iterator[Refusal]:
    """Every input, then every output, then batch inputs/outputs. `platform`: the platform
    Triton settles on (None when only the model's files would tell)."""
    for kind, tensors in (("input", cfg.input), ("output", cfg.output)):
        for i, t in enumerate(tensors):
            found = list(_shape((kind, i), f"{kind} '{t.name}'", t, cfg.max_batch_size))
            yield from found
            if found:
                continue  # a tensor without a name, type or shape: the rest would only echo it
            if kind == "input":
                yield from _layout(i, t)
            yield from _tensorrt_only((kind, i), f"{kind} '{t.name}'", t, platform)
    yield from _batch_inputs(cfg)
    yield from _batch_outputs(cfg)


def _shape(at: tuple, label: str, t, max_batch_size: int) -> Iterator[Refusal]:
    kind = at[0]
    if not t.name:
        yield Refusal(at, f"{kind} {at[1]} has no name; Triton needs the name the model gives the tensor")
        return
    if t.data_type == mc.TYPE_INVALID:
        yield Refusal(at + ("data_type",), f"{label} has no data_type; Triton needs every {kind}'s type",
                      "add one, e.g. data_type: TYPE_FP32")
        return
    if not t.dims:
        yield Refusal(at + ("dims",), f"{label} has no dims; Triton needs a shape of rank >= 1",
                      "a per-item scalar is written dims: [ 1 ] with reshape: { shape: [ ] }")
        return
    for k, d in enumerate(t.dims):
        if d < 1 and d != -1:
            yield Refusal(at + ("dims", k), f"{label} has dim {d}; Triton requires every dim to be >= 1, "
                          "or -1 for a variable-size dim")
            return
    if not t.HasField("reshape"):
        return
    if not t.reshape.shape and max_batch_size == 0:
        yield Refusal(at + ("reshape",), f"{label} has an empty reshape with max_batch_size 0: with no batch "
                      "dim the model would get a scalar, which Triton does not support")
        return
    for k, d in enumerate(t.reshape.shape):
        if d < 1 and d != -1:
            yield Refusal(at + ("reshape", "shape", k), f"{label} reshape has dim {d}; Triton requires every "
                          "reshape dim to be >= 1, or -1 for a variable-size dim")
            return
    yield from _reshape_size(at + ("reshape",), label, list(t.dims), list(t.reshape.shape))


def element_count(shape: list[int]) -> int:
    """Elements in `shape`: -1 when a dim is variable, 0 for the empty shape (Triton's convention)."""
    if -1 in shape:
        return -1
    count = 0 if not shape else 1
    for d in shape:
        count *= d
    return count


def _stretches(shape: list[int]) -> list[int]:
    """Element counts of the runs of fixed dims between variable-size (-1) dims."""
    out, run = [], 1
    for d in shape:
        if d == -1:
            out.append(run)
            run = 1
        else:
            run *= d
    return out + [run]


def _reshape_size(at: tuple, label: str, dims: list[int], shape: list[int]) -> Iterator[Refusal]:
    n_dims, n_shape = element_count(dims), element_count(shape)
    # an empty reshape turns dims [1] into a scalar: the one size mismatch Triton allows
    if n_dims != n_shape and not (n_shape == 0 and n_dims == 1):
        yield Refusal(at, f"{label} has reshape {shape} whose element count differs from dims {dims}; "
                      "Triton requires the same number of elements (and -1 on both sides or neither)")
    elif n_dims == -1:
        a, b = _stretches(dims), _stretches(shape)
        if len(a) != len(b):
            yield Refusal(at, f"{label} has {len(a) - 1} variable-size dims in dims {dims} but {len(b) - 1} in "
                          f"reshape {shape}; Triton requires the same number of -1 dims on both sides")
        elif a != b:
            yield Refusal(at, f"{label} reshape {shape} does not keep the fixed dims of dims {dims} between "
                          "the -1 dims; Triton requires each run of fixed dims between -1s to hold the same "
                          f"number of elements on both sides ({a} vs {b})")


def _layout(i: int, t) -> Iterator[Refusal]:
    if t.format in (mc.ModelInput.FORMAT_NHWC, mc.ModelInput.FORMAT_NCHW) and len(t.dims) != 3:
        name = mc.ModelInput.Format.Name(t.format)
        yield Refusal(("input", i, "format"), f"input '{t.name}' has format {name} with {len(t.dims)} dims "
                      f"{list(t.dims)}; Triton requires exactly 3 dims for {name} (the batch dim not counted)")


def _tensorrt_only(at: tuple, label: str, t, platform: str | None) -> Iterator[Refusal]:
    elsewhere = platform is not None and platform != TENSORRT
    on = f"platform '{platform}'" if platform else "a model with no platform"
    if t.is_shape_tensor and elsewhere:
        yield Refusal(at + ("is_shape_tensor",), f"{label} is a shape tensor on {on}; Triton supports shape "
                      f"tensors only for TensorRT ({TENSORRT})")
    elif t.is_non_linear_format_io and elsewhere:
        yield Refusal(at + ("is_non_linear_format_io",), f"{label} sets is_non_linear_format_io on {on}; "
                      f"Triton supports non-linear I/O formats only for TensorRT ({TENSORRT})")
    elif t.is_non_linear_format_io and len(t.dims) != 3:
        yield Refusal(at + ("is_non_linear_format_io",), f"{label} sets is_non_linear_format_io with "
                      f"{len(t.dims)} dims; Triton requires exactly 3 dims for a non-linear I/O format")


def _batch_inputs(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    inputs = {t.name for t in cfg.input}
    for i, b in enumerate(cfg.batch_input):
        at, kind = ("batch_input", i), mc.BatchInput.Kind.Name(b.kind)
        label = f"batch_input {list(b.target_name)}"
        if len(b.source_input) != 1:
            yield Refusal(at + ("source_input",), f"{label} of kind {kind} names {len(b.source_input)} "
                          "source inputs; Triton requires exactly 1, the input the batch value is computed from")
        elif b.data_type not in BATCH_INPUT_TYPES:
            yield Refusal(at + ("data_type",), f"{label} has data_type {mc.DataType.Name(b.data_type)}; "
                          "Triton requires TYPE_INT32 or TYPE_FP32 for a batch input")
        elif b.source_input[0] not in inputs:
            yield Refusal(at + ("source_input", 0), f"{label} takes source_input '{b.source_input[0]}', which is "
                          "not an input of the model; Triton requires a source that is one")


def _batch_outputs(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    inputs, outputs = {t.name for t in cfg.input}, {t.name for t in cfg.output}
    for i, b in enumerate(cfg.batch_output):
        at, kind = ("batch_output", i), mc.BatchOutput.Kind.Name(b.kind)
        label = f"batch_output {list(b.target_name)}"
        if len(b.source_input) != 1:
            yield Refusal(at + ("source_input",), f"{label} of kind {kind} names {len(b.source_input)} "
                          "source inputs; Triton requires exactly 1, the input whose shape scatters the output")
            continue
        if b.source_input[0] not in inputs:
            yield Refusal(at + ("source_input", 0), f"{label} takes source_input '{b.source_input[0]}', which is "
                          "not an input of the model; Triton requires a source that is one")
            continue
        seen: set[str] = set()
        for k, name in enumerate(b.target_name):
            if name not in outputs:
                yield Refusal(at + ("target_name", k), f"batch_output target_name '{name}' is not an output of "
                              "the model; Triton requires each target to be one")
            elif name in seen:
                yield Refusal(at + ("target_name", k), f"batch_output names target '{name}' twice; Triton "
                              "allows each target once")
            seen.add(name)


def warmup_refusals(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    """model_warmup samples Triton cannot build or run (an ensemble's are refused elsewhere)."""
    if cfg.HasField("ensemble_scheduling"):
        return
    limit = max(cfg.max_batch_size, 1)  # without batching, one item per execution
    for i, w in enumerate(cfg.model_warmup):
        if w.batch_size == 0:
            continue  # Triton skips such a sample
        at, label = ("model_warmup", i), f"model_warmup '{w.name}'"
        for key in sorted(w.inputs):
            where = at + ("inputs", ("key", key), "value")
            sample = w.inputs[key]
            if -1 in sample.dims:
                yield Refusal(where + ("dims",), f"{label} input '{key}' has a variable-size dim in "
                              f"{list(sample.dims)}; Triton needs every warmup dim stated to build the sample")
            elif sample.WhichOneof("input_data_type") is None:
                yield Refusal(where, f"{label} input '{key}' has no data: Triton needs one of zero_data, "
                              "random_data or input_data_file")
        if w.batch_size > limit:
            yield Refusal(at + ("batch_size",), f"{label} has batch_size {w.batch_size} but max_batch_size is "
                          f"{cfg.max_batch_size}: Triton runs the sample as one batch of {w.batch_size} and the "
                          f"backend refuses a batch above {limit}, so the model fails to load",
                          f"lower the sample's batch_size to at most {limit}, or keep max_batch_size >= "
                          f"{w.batch_size}")
