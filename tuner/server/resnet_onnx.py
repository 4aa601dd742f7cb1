"""The bundled `resnet` model's ONNX file, built locally with random weights.

A ResNet-50 (v1.5: stride on the 3x3 conv of each bottleneck) with batch norm
folded into each convolution's weights and bias, written with `onnx.helper`
from a seeded numpy RNG: nothing is downloaded, and every build gives the same
bytes. Only the compute matters to tuner (the served model's cost per batch),
not what the weights have learned.

Input `input` FP32 [batch, 3, 224, 224], output `logits` FP32 [batch, 1000].

The file (about 100 MB) is built once into tuner's cache folder
(``$XDG_CACHE_HOME/tuner`` or ``~/.cache/tuner``), keyed by `MODEL_VERSION`,
and hard-linked (or copied) into each model repository that needs it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

ARCH = "resnet18"  # or "resnet50" (about 2x slower on a 2-core CPU: ~42 ms per image)
# Bump when the graph or the weights change: the cache key.
MODEL_VERSION = f"{ARCH}-v1.5-seed0-opset17-r1"
SEED = 0
OPSET = 17
IR_VERSION = 8  # readable by onnxruntime >= 1.10, and by Triton's ONNX Runtime backend

# arch: (block kind, blocks per stage); stage widths are 64, 128, 256, 512.
ARCHS = {"resnet18": ("basic", (2, 2, 2, 2)), "resnet50": ("bottleneck", (3, 4, 6, 3))}
WIDTHS = (64, 128, 256, 512)
EXPANSION = 4  # bottleneck blocks' output channels / width
NUM_CLASSES = 1000
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tuner"


def cached_model_path() -> Path:
    return cache_dir() / f"{MODEL_VERSION}.onnx"


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}_{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, relu: bool = True,
             gain: float = 1.0) -> str:
        """Conv (batch norm folded in) + optional Relu; He-initialised, scaled by `gain`."""
        from onnx import helper, numpy_helper

        name = self._name("conv")
        std = gain * np.sqrt(2.0 / (cin * k * k))
        w = (self.rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(std))
        b = (self.rng.standard_normal(cout, dtype=np.float32) * np.float32(0.01))
        self.inits += [numpy_helper.from_array(w, f"{name}.weight"),
                       numpy_helper.from_array(b, f"{name}.bias")]
        pad = k // 2
        out = f"{name}.out"
        self.nodes.append(helper.make_node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[pad, pad, pad, pad],
        ))
        if not relu:
            return out
        return self.relu(out)

    def relu(self, x: str) -> str:
        from onnx import helper

        name = self._name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [f"{name}.out"], name=name))
        return f"{name}.out"

    def add(self, a: str, b: str) -> str:
        from onnx import helper

        name = self._name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [f"{name}.out"], name=name))
        return f"{name}.out"

    def bottleneck(self, x: str, cin: int, width: int, stride: int) -> str:
        cout = width * EXPANSION
        y = self.conv(x, cin, width, 1)
        y = self.conv(y, width, width, 3, stride=stride)
        # A small last conv (like zero-init of the last BN's gamma) keeps the
        # residual sum's scale from growing block after block.
        y = self.conv(y, width, cout, 1, relu=False, gain=0.2)
        shortcut = x
        if stride != 1 or cin != cout:
            shortcut = self.conv(x, cin, cout, 1, stride=stride, relu=False)
        return self.relu(self.add(y, shortcut))

    def basic(self, x: str, cin: int, width: int, stride: int) -> str:
        y = self.conv(x, cin, width, 3, stride=stride)
        y = self.conv(y, width, width, 3, relu=False, gain=0.2)
        shortcut = x
        if stride != 1 or cin != width:
            shortcut = self.conv(x, cin, width, 1, stride=stride, relu=False)
        return self.relu(self.add(y, shortcut))


def build_model(arch: str = ARCH):
    """The ResNet ModelProto (random weights, seeded)."""
    from onnx import TensorProto, helper, numpy_helper

    kind, blocks_per_stage = ARCHS[arch]
    block = _Builder.bottleneck if kind == "bottleneck" else _Builder.basic
    expansion = EXPANSION if kind == "bottleneck" else 1
    b = _Builder(SEED)
    x = b.conv(INPUT_NAME, 3, 64, 7, stride=2)
    pool = "maxpool.out"
    b.nodes.append(helper.make_node("MaxPool", [x], [pool], name="maxpool",
                                    kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]))
    x, cin = pool, 64
    for i, (width, blocks) in enumerate(zip(WIDTHS, blocks_per_stage)):
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            x = block(b, x, cin, width, stride)
            cin = width * expansion
    b.nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap.out"], name="gap"))
    b.nodes.append(helper.make_node("Flatten", ["gap.out"], ["flatten.out"], name="flatten", axis=1))
    fc_w = b.rng.standard_normal((NUM_CLASSES, cin), dtype=np.float32) * np.float32(np.sqrt(1.0 / cin))
    fc_b = np.zeros(NUM_CLASSES, dtype=np.float32)
    b.inits += [numpy_helper.from_array(fc_w, "fc.weight"), numpy_helper.from_array(fc_b, "fc.bias")]
    b.nodes.append(helper.make_node("Gemm", ["flatten.out", "fc.weight", "fc.bias"], [OUTPUT_NAME],
                                    name="fc", transB=1))

    graph = helper.make_graph(
        b.nodes, f"{arch}_random",
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="tuner.resnet_onnx")
    model.ir_version = IR_VERSION
    model.doc_string = f"{arch} with random weights (seed {SEED}), batch norm folded into the convolutions"
    return model


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def ensure_cached_model() -> Path:
    """The cached ONNX file, built first if missing."""
    path = cached_model_path()
    if path.is_file() and path.stat().st_size > 0:
        return path
    import onnx

    model = build_model()
    onnx.checker.check_model(model)
    _atomic_write_bytes(path, model.SerializeToString())
    return path


def prepare_model_dir(model_dir: Path) -> None:
    """Make sure `model_dir/1/model.onnx` exists (called after the model folder is copied)."""
    target = Path(model_dir) / "1" / "model.onnx"
    if target.is_file() and target.stat().st_size > 0:
        return
    src = ensure_cached_model()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(src, tmp)  # same filesystem: no copy of ~100 MB
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
