"""Accumulator for the embedded Triton's sequence batcher: SUM = the running sum
of a sequence's VALUE inputs, after a delay that models an accelerator's cost.

State is kept per correlation id (the CORRID control input Triton fills in),
reset by the START flag and dropped after the END flag. Requests whose READY
flag is 0 fill empty slots of a direct-strategy batch: they cost like any
slot (a real batched kernel computes them too) and leave state untouched.

Parameters (config `parameters`, optional):

    fixed_cost_ms      cost of one execution, whatever its batch (3.0)
    per_item_cost_ms   cost of each batched slot, ready or not (0.25)
    max_supported_batch_size  a config asking for a larger max_batch_size fails to
                       load, as an engine built for a maximum batch does (tests use it)

Sleeping (not spinning) models an accelerator: the host CPU stays free.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(params, key, default):
    return float(params.get(key, {}).get("string_value", default))


def _flag(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return t is not None and bool(t.as_numpy().reshape(-1)[0])


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.fixed_s = _param(params, "fixed_cost_ms", "3.0") / 1000.0
        self.per_item_s = _param(params, "per_item_cost_ms", "0.25") / 1000.0
        self.sums = {}  # correlation id -> running sum
        limit = params.get("max_supported_batch_size", {}).get("string_value", "")
        if limit and int(config.get("max_batch_size", 0)) > int(limit):
            raise pb_utils.TritonModelException(
                f"max_batch_size {config['max_batch_size']} exceeds the engine's maximum batch size {limit}")

    def execute(self, requests):
        time.sleep(self.fixed_s + self.per_item_s * len(requests))
        responses = []
        for r in requests:
            value = pb_utils.get_input_tensor_by_name(r, "VALUE").as_numpy()
            if not _flag(r, "READY"):
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("SUM", np.zeros_like(value))]))
                continue
            corrid = int(pb_utils.get_input_tensor_by_name(r, "CORRID").as_numpy().reshape(-1)[0])
            total = value if _flag(r, "START") else self.sums.get(corrid, 0) + value
            if _flag(r, "END"):
                self.sums.pop(corrid, None)
            else:
                self.sums[corrid] = total
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("SUM", total.astype(np.float32))]))
        return responses
