"""The colour maps of depth for people (tables; :func:`space_clip_ros.dense_outputs.colorize` applies them)."""

from __future__ import annotations

import functools

import numpy as np

#: Colormap names accepted everywhere (node parameter ``colormap``, CLIs), mapped to OpenCV's tables.
COLORMAPS = ("turbo", "viridis", "inferno", "magma", "plasma", "jet", "gray")


@functools.lru_cache(maxsize=None)
def colormap_table(colormap: str) -> np.ndarray:
    """(256, 3) uint8 RGB: the colour of each index of colormap ``colormap`` (OpenCV's tables; ``gray`` a ramp).
    Read-only; :func:`space_clip_ros.dense_outputs.colorize` maps depth through it."""
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
