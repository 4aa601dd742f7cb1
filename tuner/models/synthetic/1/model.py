"""Synthetic model for the embedded Triton: output = input, after a delay that
models an accelerator's cost for the batch it was given.

Parameters (config `parameters`, all optional; the defaults give the plain
linear model: fixed_cost_ms + per_item_cost_ms * batch):

    fixed_cost_ms            cost of one execution, whatever its batch (2.0)
    per_item_cost_ms         cost of each batched item (0.5)
    knee_batch_size          items beyond this many cost knee_per_item_cost_ms each
                             instead (0: no knee), like a kernel that spills past
                             a tile or cache size
    knee_per_item_cost_ms    (0.0)
    pad_to_max_batch         "true": every execution costs as a full max_batch_size
                             batch, like a static-shape engine (partial batches are
                             padded), so how full the batcher makes them matters
    jitter_pct               each execution's cost is scaled by a uniform factor in
                             [1 - p/100, 1 + p/100] (0)
    device_overlap           the share of an execution that overlaps other
                             instances' executions (1.0: none shared). Below 1 the
                             instances of this model share one simulated device:
                             the rest of each execution holds a lock that every
                             instance (one stub process each) takes in turn
    device                   the name of the simulated device the model runs on (""): models
                             naming the same device share it, as several models share
                             one GPU (with device_overlap below 1: one lock for all of them)
    max_supported_batch_size a config asking for a larger max_batch_size fails to
                             load, as a TensorRT plan built for a maximum batch does
    finalize_delay_s         an unload waits this long in `finalize` (0), so the version
                             stays UNLOADING and the server not ready meanwhile: what an
                             unload that hangs in the backend looks like to a client

Sleeping (not spinning) models an accelerator: the host CPU stays free, so
instances overlap like several GPU streams would, up to device_overlap.
"""

import fcntl
import json
import os
import random
import time

import triton_python_backend_utils as pb_utils


def _param(params, key, default):
    return params.get(key, {}).get("string_value", default)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = config.get("parameters", {})
        self.fixed_s = float(_param(params, "fixed_cost_ms", "2.0")) / 1000.0
        self.per_item_s = float(_param(params, "per_item_cost_ms", "0.5")) / 1000.0
        self.knee = int(_param(params, "knee_batch_size", "0") or 0)
        self.knee_per_item_s = float(_param(params, "knee_per_item_cost_ms", "0") or 0) / 1000.0
        self.max_batch = int(config.get("max_batch_size", 0))
        self.padded = _param(params, "pad_to_max_batch", "false").lower() == "true"
        self.jitter = float(_param(params, "jitter_pct", "0") or 0) / 100.0
        self.overlap = min(1.0, max(0.0, float(_param(params, "device_overlap", "1.0") or 1.0)))
        self.rng = random.Random(os.getpid())
        self.lock_path = None
        if self.overlap < 1.0:
            # one lock file per model folder: every instance (stub process) of this model shares it;
            # a named device's lock sits in the repository, shared by every model naming it
            model_dir = args.get("model_repository", "/tmp")
            device = _param(params, "device", "")
            self.lock_path = (os.path.join(os.path.dirname(model_dir.rstrip("/")), f".device-{device}.lock")
                              if device else os.path.join(model_dir, ".device.lock"))
        # Emulates an engine built for a fixed maximum batch (as a TensorRT plan
        # is): a config asking for more fails to load, like the real thing.
        limit = _param(params, "max_supported_batch_size", "")
        if limit and self.max_batch > int(limit):
            raise pb_utils.TritonModelException(
                f"max_batch_size {config['max_batch_size']} exceeds the engine's maximum batch size {limit}"
            )
        self.finalize_delay_s = float(_param(params, "finalize_delay_s", "0") or 0)
        self.output_name = config["output"][0]["name"]
        self.input_name = config["input"][0]["name"]

    def cost_s(self, items):
        if self.padded and self.max_batch > 0:
            items = max(items, self.max_batch)
        cost = self.fixed_s
        if self.knee > 0 and items > self.knee:
            cost += self.per_item_s * self.knee + self.knee_per_item_s * (items - self.knee)
        else:
            cost += self.per_item_s * items
        if self.jitter > 0:
            cost *= 1.0 + self.rng.uniform(-self.jitter, self.jitter)
        return cost

    def run(self, cost):
        if self.lock_path is None:
            time.sleep(cost)
            return
        time.sleep(cost * self.overlap)
        with open(self.lock_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                time.sleep(cost * (1.0 - self.overlap))
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def execute(self, requests):
        tensors = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        items = sum(t.shape[0] if t.ndim > 1 else 1 for t in tensors)
        self.run(self.cost_s(items))
        return [
            pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, t)])
            for t in tensors
        ]

    def finalize(self):
        if self.finalize_delay_s > 0:
            time.sleep(self.finalize_delay_s)
