"""A business-logic (BLS) model for the embedded Triton: each request is passed on to the
composing model named by the `composing_model` parameter (default "bls_model") through
Triton's in-process BLS API, and its output returned.

The calls of one execution are sent together (`async_exec`, gathered), so the composing
model sees as many requests at once as this model was handed: its dynamic batcher can
batch them. Errors of the composing model come back as this request's error.
"""

import asyncio
import json

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.target = params.get("composing_model", {}).get("string_value", "bls_model")
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.loop = asyncio.new_event_loop()

    async def _call(self, request):
        tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
        call = pb_utils.InferenceRequest(model_name=self.target, requested_output_names=["OUTPUT0"],
                                         inputs=[pb_utils.Tensor("INPUT0", tensor.as_numpy())])
        answer = await call.async_exec()
        if answer.has_error():
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(answer.error().message()))
        out = pb_utils.get_output_tensor_by_name(answer, "OUTPUT0")
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, out.as_numpy())])

    def execute(self, requests):
        async def all_calls():
            return await asyncio.gather(*(self._call(r) for r in requests))

        return self.loop.run_until_complete(all_calls())

    def finalize(self):
        self.loop.close()
