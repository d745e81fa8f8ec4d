"""Depth to colour for people: a matplotlib-style colormap over a fixed metric range."""

from __future__ import annotations

import functools

import numpy as np

#: Colormap names accepted everywhere (node parameter ``colormap``, CLIs), mapped to OpenCV's tables.
COLORMAPS = ("turbo", "viridis", "inferno", "magma", "plasma", "jet", "gray")


@functools.lru_cache(maxsize=None)
def colormap_table(colormap: str) -> np.ndarray:
    """(256, 3) uint8 RGB: the colour of each index of colormap ``colormap`` (OpenCV's tables; ``gray`` a ramp).
    Read-only; shared by :func:`colorize_depth` and the tensor version in :mod:`space_clip_ros.outputs`."""
    import cv2

    name = colormap.lower()
    if name not in COLORMAPS:
        raise ValueError(f"colormap must be one of {COLORMAPS}, got {colormap!r}")
    index = np.arange(256, dtype=np.uint8)[:, None]
    if name == "gray":
        table = np.repeat(index, 3, axis=1)
    else:
        table = cv2.applyColorMap(index, getattr(cv2, f"COLORMAP_{name.upper()}"))[:, 0, ::-1]
    table = np.ascontiguousarray(table)
    table.setflags(write=False)
    return table


def colorize_depth(depth: np.ndarray, min_depth: float, max_depth: float, colormap: str = "turbo",
                   invalid_rgb=(0, 0, 0)) -> np.ndarray:
    """HxW metres -> HxWx3 uint8 RGB. Near is the colormap's high end (warm for turbo); NaN, inf and values <= 0
    are ``invalid_rgb``. Values are clipped to [min_depth, max_depth]."""
    table = colormap_table(colormap)
    if not max_depth > min_depth:
        raise ValueError(f"max_depth ({max_depth}) must exceed min_depth ({min_depth})")
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    scaled = (max_depth - np.clip(np.where(valid, depth, max_depth), min_depth, max_depth)) / (max_depth - min_depth)
    index = (scaled * 255.0 + 0.5).astype(np.uint8)
    rgb = table[index]
    rgb[~valid] = invalid_rgb
    return rgb
