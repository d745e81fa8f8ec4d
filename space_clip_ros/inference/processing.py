"""The frame pipeline every backend runs: uint8 frames -> pixel values -> model -> depth at the wanted size.

One definition, shared by the eager path, the compiled path and the graph-captured path, so that they compute the
same numbers. The frame is prepared as the authors' evaluation (and train/) prepares it: the whole frame resized
bicubic to the training size (the checkpoint's ``output_size``, 352x704 for KITTI) as 8-bit RGB, then resized bicubic
to the tower's input (224x224) as 8-bit RGB, then normalised with the checkpoint's mean/std. PIL does those resizes
in train/; torch's antialiased bicubic with rounding to 8 bits gives the same pixels within one level (measured on
the KITTI sample frames: max 1, mean 0.016 levels; a single direct resize would differ by up to 6). The model's depth
is resized bilinearly to the output size and, when a focal-length scale is given, multiplied by it.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

Size = Tuple[int, int]


def _resize_8bit(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bicubic, antialiased resize of 0..255 values, rounded and clamped to 8-bit levels (as PIL's uint8 resize)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    x = F.interpolate(x, size=tuple(size), mode="bicubic", align_corners=False, antialias=True)
    return x.add_(0.5).floor_().clamp_(0.0, 255.0)


def to_pixel_values(frames: Tensor, input_size: Size, mean: Tensor, std: Tensor, dtype: torch.dtype,
                    via: Optional[Size] = None) -> Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, S, S) normalised pixel values in ``dtype`` (``mean``/``std``: (1, 3, 1, 1)),
    through an 8-bit resize to ``via`` first when given (the training size: see the module's docstring)."""
    x = frames.permute(0, 3, 1, 2).float()
    if via is not None:
        x = _resize_8bit(x, via)
    x = _resize_8bit(x, input_size).div_(255.0)
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
