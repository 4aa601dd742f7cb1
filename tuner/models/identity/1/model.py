"""Identity model: output = input, no added cost."""

import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output_name = config["output"][0]["name"]
        self.input_name = config["input"][0]["name"]

    def execute(self, requests):
        return [
            pb_utils.InferenceResponse(
                output_tensors=[
                    pb_utils.Tensor(self.output_name, pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy())
                ]
            )
            for r in requests
        ]
