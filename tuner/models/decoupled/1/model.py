"""Decoupled model: `responses` responses per request, `delay_ms` apart, then the final flag."""

import json
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.responses = int(params.get("responses", "4"))
        self.delay_s = float(params.get("delay_ms", "1.0")) / 1000.0
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def execute(self, requests):
        senders = [(r.get_response_sender(), pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy())
                   for r in requests]
        for _ in range(self.responses):
            time.sleep(self.delay_s)
            for sender, data in senders:
                sender.send(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, data)]))
        for sender, _ in senders:
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
