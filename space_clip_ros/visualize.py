"""Depth to colour for people: a matplotlib-style colormap over a fixed metric range."""

from __future__ import annotations

import numpy as np

#: Colormap names accepted everywhere (node parameter ``colormap``, CLIs), mapped to OpenCV's tables.
COLORMAPS = ("turbo", "viridis", "inferno", "magma", "plasma", "jet", "gray")


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float, colormap: str = "turbo",
                   invalid_rgb=(0, 0, 0)) -> np.ndarray:
    """HxW metres -> HxWx3 uint8 RGB. Near is the colormap's high end (warm for turbo); NaN, inf and values <= 0
    are ``invalid_rgb``. Values are clipped to [min_depth, max_depth]."""
    import cv2

    name = colormap.lower()
    if name not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}, got {colormap!r}")
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = (max_depth - np.clip(np.where(valid, depth, max_depth), min_depth, max_depth)) / (max_depth - min_depth)
    index = (scaled * 255.0 + 0.5).astype(np.uint8)
    if name == "gray":
        rgb = np.repeat(index[..., None], 3, axis=2)
    else:
        bgr = cv2.applyColorMap(index, getattr(cv2, f"COLORMAP_{name.upper()}"))
        rgb = bgr[..., ::-1]
    rgb = np.ascontiguousarray(rgb)
    rgb[~valid] = invalid_rgb
    return rgb
