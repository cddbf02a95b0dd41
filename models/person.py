"""Where the people are: a pretrained person segmenter as a frozen part of the frame network.

ImageNet has no person class, so the grounding prior (:mod:`models.grounding`) cannot see the
referent people name most. MediaPipe's selfie segmentation (landscape variant, Apache-2.0,
from the ``mediapipe`` 0.10.21 wheel: :data:`models.pretrained.PERSON_SEGMENTER`) gives a
per-pixel person probability for a 144x256 RGB frame. :class:`PersonMap` runs it with torch ops
(:class:`models.tflite_graph.TFLiteGraph`, the project's own converter), so it exports inside
the frame graph like the rest of the prior. It is frozen and never stored in checkpoints.

It was trained for people near the camera (video calls); on street footage it also marks many of
the pedestrians of ``vtest.avi`` and the walkers and cyclist of ``bikes.mp4``, but misses some of
the smallest (seen in the benchmark's overlay grids, not measured per size).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PersonMap"]

#: The segmenter's input (H, W), read from the file and checked on load.
SEGMENTER_SIZE = (144, 256)


class PersonMap(nn.Module):
    """(B, 3, H, W) normalised RGB -> (B, 1, H, W) person probability in [0, 1].

    Args:
        mean: Per-channel RGB mean the image was normalised with (0..1 scale).
        std: Per-channel RGB std of the same.
        path: The TFLite file (default: the pinned one from the installed package).
        pretrained: Read the file now. ``False`` builds the module without weights (a test or a
            config-only build); its forward then raises.

    Raises:
        models.pretrained.PretrainedMissingError: ``pretrained`` and the package is missing.
        models.tflite_graph.TFLiteError: the file is not the segmenter this module expects.
    """

    def __init__(
        self,
        *,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        path: str | Path | None = None,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.graph: nn.Module | None = None
        if pretrained or path is not None:
            self.load(path)

    def load(self, path: str | Path | None = None) -> None:
        """Read the segmenter (default: the pinned file of the installed package)."""
        from models.pretrained import person_segmenter_file
        from models.tflite_graph import TFLiteError, TFLiteGraph

        graph = TFLiteGraph(person_segmenter_file() if path is None else path)
        if graph.input_shape != (1, *SEGMENTER_SIZE, 3) or len(graph.output_names) != 1:
            raise TFLiteError(
                f"expected the 144x256 selfie segmenter, got input {graph.input_shape} and "
                f"{len(graph.output_names)} outputs"
            )
        for p in graph.parameters():  # none today (weights are buffers); frozen regardless
            p.requires_grad_(False)
        self.graph = graph.eval()

    def train(self, mode: bool = True) -> PersonMap:
        """Always in eval mode: the segmenter is frozen."""
        super().train(mode)
        if self.graph is not None:
            self.graph.eval()
        return self

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised RGB -> (B, 1, H, W) person probability."""
        if self.graph is None:
            raise RuntimeError("the person segmenter is not loaded (PersonMap.load)")
        rgb = (image.float() * self.std + self.mean).clamp(0.0, 1.0)
        x = F.interpolate(rgb, size=SEGMENTER_SIZE, mode="bilinear", align_corners=False,
                          antialias=False)  # fmt: skip
        prob = self.graph(x.permute(0, 2, 3, 1).contiguous())[0].permute(0, 3, 1, 2)
        return F.interpolate(prob, size=image.shape[-2:], mode="bilinear", align_corners=False)
