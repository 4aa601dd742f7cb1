"""Pre-flight check: the rules Triton applies to a model config on its own, before loading it.

Against a remote Triton a refused config comes back as a bare "failed to
load"; the reason is only in the server's log. So tuner checks every config
it reads, writes or sends with the same rules, and names the broken field:
`path:line:col: <rule>; <fix>` (the line and column come from the file's
text, `locate.py`; a config made in memory is named by its candidate id).

Rule families, in the order Triton applies them (Triton 2.51, the version
tuner embeds; sources: Triton core's src/model_config_utils.cc, where
ValidateModelConfig, ValidateInstanceGroup and ValidateModelIOConfig live,
src/backend_model.cc, src/backend_model_instance.cc, and the model
configuration docs and model_config.proto comments, which state the same):

 1. platform and backend: the pair Triton settles on after filling one from
    the other must agree; an ensemble has no backend;
 2. max_batch_size is not negative;
 3. dynamic_batching: preferred sizes in [1, max_batch_size]; priority
    levels, the default level and per-level queue policies consistent;
    preserve_ordering with one priority level and no DELAY timeout action;
 4. sequence_batching: control tensors, the CORRID data type, oldest
    preferred sizes, direct slot utilization, no response cache;
 5. ensemble_scheduling only with platform "ensemble" (and the reverse), no
    instance_group / optimization / model_warmup, steps and their data flow;
 6. response cache off for decoupled models; model_metrics complete;
 7. runtime: the backend library stays inside the folder Triton finds it in;
 8. instance_group: no GPUs for KIND_CPU / KIND_MODEL, no negative GPU id,
    TensorRT-only optimization profiles;
 9. inputs and outputs, batch inputs and outputs (`validate_io.py`);
10. model_warmup samples Triton can build and the backend can run
    (`validate_io.py`).

Not checked here, because they need the server: whether its GPUs exist,
whether the backend is installed, the model's files, a repository agent.
"""

from __future__ import annotations

import re
from typing import Iterator

from tritonclient.grpc import model_config_pb2 as mc

from tuner.config.locate import Refusal, Where
from tuner.config.validate_io import io_refusals, warmup_refusals
from tuner.errors import ConfigError

ENSEMBLE = "ensemble"
PLATFORM_BACKEND = {  # the platforms Triton maps to a backend of its own (torch_aoti: servers after 2.51)
    "tensorflow_graphdef": "tensorflow", "tensorflow_savedmodel": "tensorflow", "tensorrt_plan": "tensorrt",
    "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch", "torch_aoti": "pytorch",
}
KNOWN_BACKENDS = frozenset(PLATFORM_BACKEND.values())
# (platform, default_model_filename, backend) in the order Triton's server-side auto-fill tries them
AUTOFILL = (("tensorrt_plan", "model.plan", "tensorrt"), ("onnxruntime_onnx", "model.onnx", "onnxruntime"),
            (None, "model.xml", "openvino"), ("pytorch_libtorch", "model.pt", "pytorch"),
            ("torch_aoti", "model.pt2", "pytorch"), (None, "model.py", "python"))
TF_FILES = {"model.savedmodel": "tensorflow_savedmodel", "model.graphdef": "tensorflow_graphdef"}
CORRID_TYPES = (mc.TYPE_UINT64, mc.TYPE_INT64, mc.TYPE_UINT32, mc.TYPE_INT32, mc.TYPE_STRING)
CONTROL = mc.ModelSequenceBatching.Control
GROUP = mc.ModelInstanceGroup


def check_config(cfg: mc.ModelConfig, where: Where | str) -> None:
    """Raise ConfigError with the first rule `cfg` breaks, as Triton would refuse it."""
    refusal = next(refusals(cfg), None)
    if refusal is not None:
        raise ConfigError(refusal.line(where if isinstance(where, Where) else Where(where)))


def refusals(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    """Every rule `cfg` breaks, first the one Triton reports."""
    completed = completed_platform_backend(cfg)
    platform = completed[0] if completed else None
    yield from _platform_backend(cfg, completed)
    if cfg.max_batch_size < 0:
        yield Refusal(("max_batch_size",), f"max_batch_size is {cfg.max_batch_size}; Triton requires 0 "
                      "(no batching) or more", "set it >= 1 to let Triton batch, or 0 for a model without a batch dim")
    yield from _dynamic_batching(cfg)
    yield from _preserve_ordering(cfg)
    yield from _sequence_batching(cfg)
    yield from ensemble_refusals(cfg)
    yield from _cache_and_metrics(cfg)
    yield from _runtime(cfg, completed)
    yield from _instance_groups(cfg, platform)
    yield from io_refusals(cfg, platform)
    yield from warmup_refusals(cfg)


def completed_platform_backend(cfg: mc.ModelConfig) -> tuple[str, str] | None:
    """(platform, backend) after Triton fills the one left out from the other or from
    default_model_filename; None when only the model's files would tell."""
    platform, backend, filename = cfg.platform, cfg.backend, cfg.default_model_filename
    if not platform and not backend and not filename:
        return None  # Triton looks at the version folder (or the model name) to decide
    if not platform and backend in ("", "tensorflow"):
        if filename in TF_FILES:
            platform = TF_FILES[filename]
        elif not filename:
            return None  # a TensorFlow model's platform comes from its files
    if platform in TF_FILES.values():
        return platform, backend or "tensorflow"
    for plat, file, name in AUTOFILL:
        if not backend and ((plat is not None and platform == plat) or filename == file):
            backend = name
    if not platform and backend in ("tensorrt", "onnxruntime", "pytorch"):
        platform = {"tensorrt": "tensorrt_plan", "onnxruntime": "onnxruntime_onnx"}.get(backend, "pytorch_libtorch")
    return platform, backend


def _platform_backend(cfg: mc.ModelConfig, completed: tuple[str, str] | None) -> Iterator[Refusal]:
    if completed is None:
        return
    platform, backend = completed
    if platform == ENSEMBLE:
        if backend:
            yield Refusal(("backend",), f"platform 'ensemble' with backend '{backend}'; Triton runs an ensemble "
                          "itself and requires its backend empty", "remove backend")
        return
    if not backend:
        what = (f"platform '{platform}' is not one Triton knows" if platform else
                f"default_model_filename '{cfg.default_model_filename}' does not tell Triton the backend")
        yield Refusal(("platform",) if platform else ("default_model_filename",), f"{what}, and no backend is set",
                      f"use one of {', '.join(sorted(set(PLATFORM_BACKEND) - {'torch_aoti'}))}, or set backend")
    elif backend in KNOWN_BACKENDS and PLATFORM_BACKEND.get(platform) != backend:
        want = sorted(p for p, b in PLATFORM_BACKEND.items() if b == backend)
        yield Refusal(("backend",) if cfg.backend else ("platform",),
                      f"platform '{platform}' does not match backend '{backend}'; Triton requires platform "
                      f"{' or '.join(want)} with backend '{backend}'",
                      "fix the one that is wrong, or leave backend out: Triton derives it from platform")


def _dynamic_batching(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    if not cfg.HasField("dynamic_batching"):
        return
    db, at, mbs = cfg.dynamic_batching, ("dynamic_batching",), cfg.max_batch_size
    for k, size in enumerate(db.preferred_batch_size):
        if size <= 0 or size > mbs:
            yield Refusal(at + ("preferred_batch_size", k), f"dynamic_batching preferred_batch_size {size} is "
                          f"outside [1, max_batch_size {mbs}]; Triton requires every preferred size in that range")
    levels = db.priority_levels
    if not levels:
        return  # without priority levels Triton ignores the levels and their policies
    if not 1 <= db.default_priority_level <= levels:
        yield Refusal(at + ("default_priority_level",), f"dynamic_batching default_priority_level is "
                      f"{db.default_priority_level} with priority_levels {levels}; Triton requires the default "
                      f"level in [1, {levels}]", f"set default_priority_level between 1 and {levels}")
    for level in sorted(db.priority_queue_policy):
        if not 1 <= level <= levels:
            yield Refusal(at + ("priority_queue_policy", ("key", level)), f"dynamic_batching "
                          f"priority_queue_policy is for level {level}, but priority_levels is {levels}: there is "
                          f"no such level; Triton requires policy levels in [1, {levels}]",
                          "remove that policy or raise priority_levels")


def _preserve_ordering(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    db, at = cfg.dynamic_batching, ("dynamic_batching",)
    if not (cfg.HasField("dynamic_batching") and db.preserve_ordering):
        return
    if db.priority_levels > 1:
        yield Refusal(at + ("preserve_ordering",), f"dynamic_batching preserve_ordering is true with "
                      f"priority_levels {db.priority_levels}; Triton allows one priority level when responses "
                      "keep request order", "drop preserve_ordering, or use one priority level")
    policies = [(("default_queue_policy",), "default_queue_policy", db.default_queue_policy)]
    policies += [(("priority_queue_policy", ("key", k), "value"), f"priority_queue_policy for level {k}",
                  db.priority_queue_policy[k]) for k in sorted(db.priority_queue_policy)]
    for path, label, policy in policies:
        if policy.timeout_action == mc.ModelQueuePolicy.DELAY and policy.default_timeout_microseconds:
            yield Refusal(at + path + ("timeout_action",), f"dynamic_batching {label} has timeout_action DELAY "
                          "with preserve_ordering true; Triton refuses to delay timed-out requests when "
                          "responses keep request order", "use timeout_action REJECT, or drop preserve_ordering")


def _sequence_batching(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    if not cfg.HasField("sequence_batching"):
        return
    sb, at = cfg.sequence_batching, ("sequence_batching",)
    if cfg.response_cache.enable:
        yield Refusal(("response_cache", "enable"), "response_cache is enabled with sequence_batching; Triton's "
                      "response cache does not support the sequence batcher", "set response_cache { enable: false }")
    yield from _controls(sb)
    if sb.HasField("oldest"):
        for k, size in enumerate(sb.oldest.preferred_batch_size):
            if size <= 0 or size > cfg.max_batch_size:
                yield Refusal(at + ("oldest", "preferred_batch_size", k), f"sequence_batching oldest "
                              f"preferred_batch_size {size} is outside [1, max_batch_size {cfg.max_batch_size}]; "
                              "Triton requires every preferred size in that range")
    if sb.HasField("direct") and not 0.0 <= sb.direct.minimum_slot_utilization <= 1.0:
        yield Refusal(at + ("direct", "minimum_slot_utilization"), "sequence_batching direct "
                      f"minimum_slot_utilization is {sb.direct.minimum_slot_utilization:g}; Triton requires a "
                      "fraction in (0, 1]")


def _controls(sb) -> Iterator[Refusal]:
    names: set[str] = set()
    for i, ci in enumerate(sb.control_input):
        at = ("sequence_batching", "control_input", i)
        if not ci.name:
            yield Refusal(at, f"sequence_batching control_input {i} has no name; Triton needs the tensor's name")
            return
        if ci.name in names:
            yield Refusal(at + ("name",), f"sequence_batching control tensor '{ci.name}' is listed twice; Triton "
                          "allows one control_input per tensor")
            return
        names.add(ci.name)
    kinds: dict[int, str] = {}
    for i, ci in enumerate(sb.control_input):
        for j, c in enumerate(ci.control):
            at, kind = ("sequence_batching", "control_input", i, "control", j), CONTROL.Kind.Name(c.kind)
            if c.kind in kinds:
                yield Refusal(at + ("kind",), f"sequence_batching has two {kind} control tensors ('{kinds[c.kind]}' "
                              f"and '{ci.name}'); Triton allows one")
            kinds.setdefault(c.kind, ci.name)
            yield from _control_values(at, kind, c)


def _control_values(at: tuple, kind: str, c) -> Iterator[Refusal]:
    lists = [n for n in ("int32_false_true", "fp32_false_true", "bool_false_true") if len(getattr(c, n))]
    if c.kind == CONTROL.CONTROL_SEQUENCE_CORRID:
        if lists:
            yield Refusal(at + (lists[0],), f"sequence_batching {kind} control sets {lists[0]}; Triton takes the "
                          "correlation id as a typed tensor (data_type), without false/true values")
        elif c.data_type not in CORRID_TYPES:
            yield Refusal(at + ("data_type",), f"sequence_batching {kind} control has data_type "
                          f"{mc.DataType.Name(c.data_type)}; Triton allows TYPE_UINT64, TYPE_INT64, TYPE_UINT32, "
                          "TYPE_INT32 or TYPE_STRING")
    elif len(lists) != 1:
        yield Refusal(at, f"sequence_batching {kind} control sets {' and '.join(lists) or 'none'} of "
                      "int32_false_true, fp32_false_true, bool_false_true; Triton needs exactly one")
    elif len(getattr(c, lists[0])) != 2:
        yield Refusal(at + (lists[0],), f"sequence_batching {kind} control {lists[0]} has "
                      f"{len(getattr(c, lists[0]))} entries; Triton needs exactly 2, the false then the true value")


def _cache_and_metrics(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    if cfg.model_transaction_policy.decoupled and cfg.response_cache.enable:
        yield Refusal(("response_cache", "enable"), "response_cache is enabled on a decoupled model; Triton's "
                      "response cache does not support decoupled models", "set response_cache { enable: false }")
    for i, m in enumerate(cfg.model_metrics.metric_control):
        at = ("model_metrics", "metric_control", i)
        missing = ("metric_identifier" if not m.HasField("metric_identifier")
                   else "metric_identifier family" if not m.metric_identifier.family
                   else "histogram_options" if not m.HasField("histogram_options")
                   else "histogram_options buckets" if not m.histogram_options.buckets else "")
        if missing:
            yield Refusal(at, f"model_metrics metric_control {i} has no {missing}; Triton needs it to customize "
                          "a metric")


def _runtime(cfg: mc.ModelConfig, completed: tuple[str, str] | None) -> Iterator[Refusal]:
    """A runtime that climbs out ('..') of every folder Triton could find it in."""
    parts: list[str] = []
    climbs = 0
    for p in cfg.runtime.split("/"):  # a leading '/' only joins: Triton appends it to the folder
        if p == "..":
            if parts:
                parts.pop()
            else:
                climbs += 1
        elif p not in ("", "."):
            parts.append(p)
    if not climbs:
        return
    # Climbing k folders out of folder D re-enters D only through D's own name, the k-th part
    # after the '..'s: the backend's folder, the model's folder or a version folder (an unnamed
    # config's folder name is unknown here, so it gets the benefit of the doubt).
    names = {completed[1] if completed else cfg.backend, cfg.name} - {""}
    back_in = len(parts) > climbs and (parts[climbs - 1] in names or parts[climbs - 1].isdigit()
                                        or not cfg.name)
    if not back_in:
        yield Refusal(("runtime",), f"runtime '{cfg.runtime}' leads out of the backend's folder; Triton refuses "
                      "a backend library outside the folder it searches",
                      "name the library file itself, e.g. runtime: \"model.py\" or \"libtriton_<backend>.so\"")


def _instance_groups(cfg: mc.ModelConfig, platform: str | None) -> Iterator[Refusal]:
    if cfg.HasField("ensemble_scheduling"):
        return  # an ensemble's groups are refused with the ensemble rules
    for i, g in enumerate(cfg.instance_group):
        at, label = ("instance_group", i), f"instance_group {i}" + (f" '{g.name}'" if g.name else "")
        kind, gpus = GROUP.Kind.Name(g.kind), list(g.gpus)
        negative = [k for k, gpu in enumerate(gpus) if gpu < 0]
        if g.kind in (GROUP.KIND_CPU, GROUP.KIND_MODEL) and gpus:
            yield Refusal(at + ("gpus",), f"{label} has kind {kind} and lists gpus {gpus}; Triton allows gpus "
                          "only for KIND_GPU (or KIND_AUTO)", "remove gpus, or use kind: KIND_GPU")
        elif negative and g.kind == GROUP.KIND_AUTO:
            yield Refusal(at + ("gpus", negative[0]), f"{label} lists gpu {gpus[negative[0]]} with kind KIND_AUTO; "
                          "no GPU has a negative id, so Triton falls back to KIND_CPU, which allows no gpus",
                          "list GPU ids from 0")
        elif negative:
            yield Refusal(at + ("gpus", negative[0]), f"{label} lists gpu {gpus[negative[0]]}; Triton refuses "
                          "a GPU id that no device has (ids start at 0)", "list GPU ids from 0")
        if g.profile and platform is not None and platform != "tensorrt_plan":
            on = f"platform '{platform}'" if platform else "a model with no platform"
            yield Refusal(at + ("profile",), f"{label} sets profile on {on}; Triton supports "
                          "optimization profiles only for TensorRT models (tensorrt_plan)", "remove profile")
            continue
        for k, p in enumerate(g.profile):
            m = re.match(r"\s*[+-]?\d+", p)  # how C++'s stoi reads it: leading digits count
            if m is None or int(m.group()) < 0:
                yield Refusal(at + ("profile", k), f"{label} lists profile '{p}'; Triton requires a TensorRT "
                              "optimization profile index, a non-negative integer")


def ensemble_refusals(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    if not cfg.HasField("ensemble_scheduling"):
        if cfg.platform == ENSEMBLE:
            yield Refusal(("platform",), "platform is 'ensemble' but ensemble_scheduling is missing; Triton needs "
                          "an ensemble's steps", "add ensemble_scheduling { step [ ... ] }")
        return
    if cfg.platform != ENSEMBLE:
        platform = f"'{cfg.platform}'" if cfg.platform else "not set"
        yield Refusal(("ensemble_scheduling",), f"ensemble_scheduling is set but platform is {platform}, not "
                      "'ensemble'; Triton schedules steps only for platform ensemble",
                      'set platform: "ensemble" (and no backend), or remove ensemble_scheduling')
        return
    for name, present in (("instance_group", len(cfg.instance_group)), ("optimization", cfg.HasField("optimization")),
                          ("model_warmup", len(cfg.model_warmup))):
        if present:
            yield Refusal((name,), f"an ensemble sets {name}; Triton refuses it for an ensemble, which has no "
                          "instances of its own", f"remove {name}; set it on the composing models")
    steps = cfg.ensemble_scheduling.step
    if not steps:
        yield Refusal(("ensemble_scheduling",), "ensemble_scheduling has no step; Triton needs at least one")
        return
    for i, s in enumerate(steps):
        for name, present in (("model_name", s.model_name), ("input_map", len(s.input_map)),
                              ("output_map", len(s.output_map))):
            if not present:
                yield Refusal(("ensemble_scheduling", "step", i), f"ensemble step {i} has no {name}; Triton needs "
                              "the model a step runs and how its inputs and outputs map to ensemble tensors")
                return  # the data flow of an incomplete step says nothing more
    yield from _ensemble_flow(cfg)


def _ensemble_flow(cfg: mc.ModelConfig) -> Iterator[Refusal]:
    """Each step's outputs are ready once all its inputs are; every tensor must be written and read."""
    at = ("ensemble_scheduling", "step")
    feeds: dict[str, set[str]] = {}  # tensor -> the tensors it is computed from
    reads: dict[str, set[str]] = {}  # tensor -> the tensors computed from it
    first_use: dict[str, tuple] = {}  # tensor -> where a step first names it
    written: set[str] = set()
    for i, s in enumerate(cfg.ensemble_scheduling.step):
        ins, outs = set(s.input_map.values()), list(s.output_map.values())
        for t in outs:
            if t in written or outs.count(t) > 1:
                yield Refusal(at + (i, "output_map", ("value", t)), f"ensemble tensor '{t}' is written by more "
                              "than one output map; Triton allows each tensor one writer")
                return
            written.add(t)
            feeds.setdefault(t, set()).update(ins)
            reads.setdefault(t, set())
            first_use.setdefault(t, at + (i, "output_map", ("value", t)))
        for t in ins:
            feeds.setdefault(t, set())
            reads.setdefault(t, set()).update(outs)
            first_use.setdefault(t, at + (i, "input_map", ("value", t)))
    ready = {t.name for t in cfg.input}
    for k, t in enumerate(cfg.input):
        if t.name not in feeds:
            yield Refusal(("input", k), f"ensemble input '{t.name}' is not used by any step; Triton requires "
                          "every ensemble input mapped to a step input")
    while grown := {t for t, src in feeds.items() if t not in ready and src and src <= ready}:
        ready |= grown
    for k, t in enumerate(cfg.output):
        if t.name not in feeds or t.name not in ready:
            cut = sorted(n for n in feeds if n not in ready and not feeds[n])
            why = f": it depends on '{cut[0]}', which no step writes and no input provides" if cut else ""
            yield Refusal(("output", k), f"ensemble output '{t.name}' is never written{why}; Triton requires every "
                          "ensemble output to be the output of a step whose inputs are all provided")
            return  # the tensors it depends on are the same fault
    outputs = {t.name for t in cfg.output}
    for t in sorted(set(feeds) - outputs):
        if t not in ready or not reads[t]:
            yield Refusal(first_use[t], f"ensemble tensor '{t}' is {'never read' if t in ready else 'never written'}; "
                          "Triton requires every tensor between steps to be both written and read")
