"""ResNet on onnxruntime (CPU) inside Triton's Python backend.

Loads `model.onnx` from this version folder (tuner.resnet_onnx builds it when
tuner prepares the model repository). Each execution concatenates all of its
requests' inputs into one batch and runs the session once, so, like a real
batching backend, a bigger dynamic batch means fewer, larger executions.

Parameters (config.pbtxt): intra_op_threads (onnxruntime threads, default 2;
0 lets onnxruntime pick), allow_spinning ("1"/"0", onnxruntime's default "1").
"""

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(params, key, default):
    value = params.get(key, {}).get("string_value", "")
    return value if value != "" else default


class TritonPythonModel:
    def initialize(self, args):
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        threads = int(_param(params, "intra_op_threads", "2"))
        spinning = _param(params, "allow_spinning", "1")

        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        if not os.path.isfile(path):
            raise pb_utils.TritonModelException(
                f"{path} is missing; tuner builds it when it prepares the model repository "
                "(tuner.resnet_onnx.prepare_model_dir)"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.add_session_config_entry("session.intra_op.allow_spinning", spinning)
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.session_input = self.session.get_inputs()[0].name
        self.session_output = self.session.get_outputs()[0].name
        logger = getattr(pb_utils, "Logger", None)
        if logger is not None:
            logger.log_info(
                f"resnet: onnxruntime {ort.__version__}, numpy {np.__version__}, "
                f"intra_op_threads {threads}, allow_spinning {spinning}"
            )

    def execute(self, requests):
        responses = [None] * len(requests)
        batch, owners, counts = [], [], []
        for i, request in enumerate(requests):
            try:
                tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
                if tensor is None:
                    raise ValueError(f"input '{self.input_name}' is missing")
                x = tensor.as_numpy()
                if x.dtype != np.float32 or x.ndim != 4 or x.shape[1:] != (3, 224, 224):
                    raise ValueError(
                        f"input '{self.input_name}' must be FP32 [batch, 3, 224, 224], "
                        f"got {x.dtype} {list(x.shape)}"
                    )
                batch.append(x)
                owners.append(i)
                counts.append(x.shape[0])
            except Exception as err:  # this request only
                responses[i] = pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(str(err))
                )

        if batch:
            try:
                x = batch[0] if len(batch) == 1 else np.concatenate(batch, axis=0)
                y = self.session.run([self.session_output], {self.session_input: x})[0]
                outputs = np.split(y, np.cumsum(counts)[:-1], axis=0)
                for i, out in zip(owners, outputs):
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(out))]
                    )
            except Exception as err:  # the whole execution failed
                for i in owners:
                    responses[i] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"onnxruntime failed: {err}")
                    )
        return responses

    def finalize(self):
        self.session = None
