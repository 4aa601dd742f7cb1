"""Variable-length model for the embedded Triton: one score per token, after a
delay that models an accelerator's cost for the tokens it was given.

Parameters (config `parameters`, optional):

    fixed_cost_ms       cost of one execution, whatever its batch (3.0)
    per_token_cost_us   cost of each token of each batched item (2.0)

A request of b items of length L (INPUT0 shape [b, L]) adds b * L tokens to
its execution. Sleeping (not spinning) models an accelerator: the host CPU
stays free while the "device" works.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(params, key, default):
    return float(params.get(key, {}).get("string_value", default))


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.fixed_s = _param(params, "fixed_cost_ms", "3.0") / 1000.0
        self.per_token_s = _param(params, "per_token_cost_us", "2.0") / 1e6

    def execute(self, requests):
        tokens = [pb_utils.get_input_tensor_by_name(r, "INPUT0").as_numpy() for r in requests]
        time.sleep(self.fixed_s + self.per_token_s * sum(t.size for t in tokens))
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("OUTPUT0", (t.astype(np.float32) * 0.5))])
            for t in tokens
        ]
