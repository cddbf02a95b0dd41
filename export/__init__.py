"""Export a checkpoint to ONNX (and TensorRT engines) and check the export against torch."""
