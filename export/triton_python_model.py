"""Triton Python-backend model: one exported ONNX graph run with ONNX Runtime inside the server.

``python -m export --triton REPO --triton-backend python`` copies this file as ``<model>/1/model.py``
next to ``<model>/1/model.onnx``. It is for Triton servers built without the ONNX Runtime
backend (``nvidia-pytriton``'s bundled ``tritonserver`` has only the Python backend). The
dynamic batcher hands :meth:`TritonPythonModel.execute` several requests at once; requests whose
non-batch shapes agree are concatenated and run as one batch, so the server's batch statistics
show real batches.

It imports only numpy, onnxruntime and Triton's ``triton_python_backend_utils``; nothing of this
project (the server's environment has neither torch nor the project installed).
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by the Python backend


class TritonPythonModel:
    """Run ``model.onnx`` for every batch of requests the server gives."""

    def initialize(self, args: dict) -> None:
        """Open the ONNX Runtime session (threads from the ``ort_threads`` parameter)."""
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.join(args["model_repository"], args["model_version"])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        threads = int(params.get("ort_threads", "0"))
        if threads > 0:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(
            os.path.join(here, "model.onnx"), opts, providers=["CPUExecutionProvider"]
        )
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def execute(self, requests: list) -> list:
        """One response per request; same-shape requests share one ONNX Runtime run."""
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        responses: list = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for k, f in enumerate(feeds):
            key = tuple((n, f[n].shape[1:], str(f[n].dtype)) for n in self.inputs)
            groups.setdefault(key, []).append(k)
        for members in groups.values():
            try:
                batch = {n: np.concatenate([feeds[k][n] for k in members]) for n in self.inputs}
                outs = self.session.run(self.outputs, batch)
            except Exception as exc:  # the error goes back to the client, per request
                for k in members:
                    responses[k] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(str(exc))
                    )
                continue
            start = 0
            for k in members:
                n = feeds[k][self.inputs[0]].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(out[start : start + n]))
                    for name, out in zip(self.outputs, outs)
                ]
                responses[k] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses
