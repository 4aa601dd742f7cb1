"""ResNet-50 with random weights in PyTorch, on the GPU or the CPU, inside
Triton's Python backend.

Nothing is downloaded: the network is built from a fixed seed when an instance
starts, with torchvision's architecture where torchvision is installed and
with this file's own definition (the same layers) where it is not. Only the
compute matters to tuner, not what the weights have learned.

Each execution runs all of its requests as one batch, so a bigger dynamic
batch means fewer, larger executions, as with any batching backend.

Tensors cross the backend boundary through DLPack, not numpy: the backend
stub of the embedded tritonserver 2.51 returns empty outputs for tensors made
from numpy 2 arrays, and a GPU host's PyTorch often comes with numpy 2.

Parameters (config.pbtxt): device ("auto": cuda:<the instance's GPU> for a
KIND_GPU instance, cpu otherwise; "cpu"; "cuda"), builder ("auto",
"torchvision", "local"), cpu_threads (PyTorch intra-op threads, default 2).
"""

import json

import triton_python_backend_utils as pb_utils

SEED = 0
INPUT_SHAPE = (3, 224, 224)
NUM_CLASSES = 1000
STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))  # (width, bottleneck blocks) per stage
EXPANSION = 4  # a bottleneck's output channels / its width


def _param(params, key, default):
    value = params.get(key, {}).get("string_value", "")
    return value if value != "" else default


def _local_resnet50(nn):
    """ResNet-50 (v1.5: the stride sits on each stage's first 3x3 convolution)."""

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride):
            super().__init__()
            cout = width * EXPANSION
            self.body = nn.Sequential(
                nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )
            self.shortcut = nn.Identity()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(cout))
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + self.shortcut(x))

    layers = [nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, stride=2, padding=1)]
    cin = 64
    for i, (width, blocks) in enumerate(STAGES):
        for j in range(blocks):
            layers.append(Bottleneck(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width * EXPANSION
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, NUM_CLASSES)]
    return nn.Sequential(*layers)


def _build(torch, builder):
    """(network, which builder made it)."""
    if builder in ("auto", "torchvision"):
        try:
            import torchvision

            return torchvision.models.resnet50(weights=None), f"torchvision {torchvision.__version__}"
        except Exception:  # missing, or a build that does not match this torch
            if builder == "torchvision":
                raise
    return _local_resnet50(torch.nn), "local"


def _device(torch, wanted, args):
    if wanted == "auto":
        wanted = "cuda" if args.get("model_instance_kind") == "GPU" else "cpu"
    if wanted == "cuda":
        if not torch.cuda.is_available():
            raise pb_utils.TritonModelException("device cuda asked for, but PyTorch sees no GPU")
        return torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}")
    if wanted != "cpu":
        raise pb_utils.TritonModelException(f"device must be auto, cpu or cuda, not {wanted!r}")
    return torch.device("cpu")


class TritonPythonModel:
    def initialize(self, args):
        import torch
        import torch.utils.dlpack

        self.torch = torch
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.device = _device(torch, _param(params, "device", "auto"), args)
        if self.device.type == "cpu":
            torch.set_num_threads(max(1, int(_param(params, "cpu_threads", "2"))))
        torch.manual_seed(SEED)
        net, made_by = _build(torch, _param(params, "builder", "auto"))
        self.net = net.eval().to(self.device)
        # Loads the kernels before the first request, so no measured request pays for it.
        for batch in sorted({1, max(1, int(config.get("max_batch_size", 1)))}):
            self._forward(torch.zeros((batch,) + INPUT_SHAPE))
        name = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu"
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            logger.log_info(f"resnet50_torch: device {self.device} ({name}), builder {made_by}, "
                            f"torch {torch.__version__}, instance kind {args.get('model_instance_kind')}")

    def _forward(self, x):
        with self.torch.inference_mode():
            return self.net(x.to(self.device, non_blocking=True)).float().cpu()

    def _input(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        if tensor is None:
            raise ValueError(f"input '{self.input_name}' is missing")
        x = self.torch.utils.dlpack.from_dlpack(tensor.to_dlpack())
        if x.dtype != self.torch.float32 or x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE:
            raise ValueError(f"input '{self.input_name}' must be FP32 [batch, 3, 224, 224], "
                             f"got {x.dtype} {list(x.shape)}")
        return x

    def execute(self, requests):
        torch = self.torch
        responses = [None] * len(requests)
        batch, owners, counts = [], [], []
        for i, request in enumerate(requests):
            try:
                x = self._input(request)
            except Exception as err:  # this request only
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(err)))
                continue
            batch.append(x)
            owners.append(i)
            counts.append(int(x.shape[0]))
        if not batch:
            return responses
        try:
            y = self._forward(batch[0] if len(batch) == 1 else torch.cat(batch))
            for i, out in zip(owners, torch.split(y, counts)):
                capsule = torch.utils.dlpack.to_dlpack(out.contiguous())
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor.from_dlpack(self.output_name, capsule)])
        except Exception as err:  # the whole execution failed
            for i in owners:
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"PyTorch failed: {err}"))
        return responses

    def finalize(self):
        self.net = None
