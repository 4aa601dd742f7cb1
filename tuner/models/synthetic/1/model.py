"""Synthetic model for the embedded Triton: output = input, after a delay of
fixed_cost_ms + per_item_cost_ms * batch_size per execution.

Sleeping (not spinning) models an accelerator: the host CPU stays free, so
several instances overlap like several GPU streams would.
"""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.fixed_s = float(params.get("fixed_cost_ms", {}).get("string_value", "2.0")) / 1000.0
        self.per_item_s = float(params.get("per_item_cost_ms", {}).get("string_value", "0.5")) / 1000.0
        # Emulates an engine built for a fixed maximum batch (as a TensorRT plan
        # is): a config asking for more fails to load, like the real thing.
        limit = params.get("max_supported_batch_size", {}).get("string_value", "")
        if limit and int(config.get("max_batch_size", 0)) > int(limit):
            raise pb_utils.TritonModelException(
                f"max_batch_size {config['max_batch_size']} exceeds the engine's maximum batch size {limit}"
            )
        self.output_name = config["output"][0]["name"]
        self.input_name = config["input"][0]["name"]

    def execute(self, requests):
        tensors = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        items = sum(t.shape[0] if t.ndim > 1 else 1 for t in tensors)
        time.sleep(self.fixed_s + self.per_item_s * items)
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, t)])
            for t in tensors
        ]
