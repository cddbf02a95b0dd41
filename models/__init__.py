"""The HINet network: config, backbone, text, interaction, motion gate, decoder, checkpoints.

Importing this package imports nothing heavy; ``models.config`` and ``models.tokenizer`` are
torch-free so that ONNX Runtime / TensorRT deployments can use them without torch.
"""
