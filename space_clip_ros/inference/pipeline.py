"""The frame pipeline every backend runs: uint8 frames -> pixel values -> model -> depth at the wanted size.

One definition, shared by the eager path, the compiled path and the graph-captured path, so that they compute the
same numbers: the whole frame is resized to the tower's input (bicubic, antialiased, aspect ratio not kept) and
normalised with the checkpoint's mean/std; the model's depth is resized bilinearly to the output size and, when a
focal-length scale is given, multiplied by it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Size = Tuple[int, int]


def to_pixel_values(frames: Tensor, input_size: Size, mean: Tensor, std: Tensor, dtype: torch.dtype) -> Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, S, S) normalised pixel values in ``dtype`` (``mean``/``std``: (1, 3, 1, 1))."""
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    if tuple(x.shape[-2:]) != tuple(input_size):
        x = F.interpolate(x, size=tuple(input_size), mode="bicubic", align_corners=False, antialias=True)
    x = x.clamp_(0.0, 1.0)
    return ((x - mean) / std).to(dtype)


def to_output(depth: Tensor, size: Sequence[int], scales: Optional[Tensor] = None) -> Tensor:
    """(B, 1, h, w) depth -> (B, H, W) float32 metres at ``size``, times ``scales`` (B,) when given."""
    depth = depth.float()
    size = (int(size[0]), int(size[1]))
    if tuple(depth.shape[-2:]) != size:
        depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
    depth = depth[:, 0]
    if scales is not None:
        depth = depth * scales.view(-1, 1, 1)
    return depth
