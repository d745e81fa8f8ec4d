"""A tiny ray-cast street scene with exact depth, for demos, tests and benchmarks that must run offline.

The camera looks along +z (x right, y down, like a camera optical frame) at ``CAMERA_HEIGHT`` metres above a flat road,
between two building facades, with a few fronto-parallel boxes ("cars") ahead. Every pixel's depth is the exact z of
the first surface hit (0 where the ray escapes to the sky, or hits beyond ``max_depth``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from .model.config import KITTI_CAMERA

CAMERA_HEIGHT = 1.65
#: KITTI's left colour camera (2011_09_26), at full resolution.
KITTI_SIZE = (375, 1242)
KITTI_K = (KITTI_CAMERA.fx, KITTI_CAMERA.fx, 609.5593, 172.854)


@dataclass(frozen=True)
class Box:
    x: float  # centre, metres right of the camera
    z: float  # distance of the front face
    width: float
    height: float
    colour: Tuple[int, int, int]


DEFAULT_BOXES: Tuple[Box, ...] = (
    Box(-2.0, 9.0, 1.8, 1.5, (200, 40, 40)),
    Box(2.5, 16.0, 1.8, 1.6, (40, 80, 200)),
    Box(-1.0, 27.0, 2.2, 2.8, (230, 200, 60)),
    Box(3.5, 40.0, 2.0, 1.5, (60, 170, 90)),
)


def render_scene(
    size: Tuple[int, int] = KITTI_SIZE,
    intrinsics: Sequence[float] = KITTI_K,
    forward: float = 0.0,
    boxes: Sequence[Box] = DEFAULT_BOXES,
    street_half_width: float = 7.0,
    facade_height: float = 9.0,
    max_depth: float = 80.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render (rgb uint8 HxWx3, depth float32 HxW metres, 0 = none) with pinhole ``intrinsics`` (fx, fy, cx, cy).

    ``forward`` moves the camera along the road (metres), which slides the textures: consecutive values make a clip.
    """
    height, width = size
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    dx, dy = (u - cx) / fx, (v - cy) / fy  # ray direction (dx, dy, 1): z is the depth along the ray
    depth = np.full((height, width), np.inf)
    rgb = np.zeros((height, width, 3))
    top = CAMERA_HEIGHT - facade_height  # y of the facades' top edge

    def hit(z: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
        nearer = mask & (z > 0) & (z < depth)
        depth[nearer] = z[nearer]
        rgb[nearer] = colour[nearer]

    with np.errstate(divide="ignore", invalid="ignore"):
        # Road: y = CAMERA_HEIGHT. Asphalt grey with lane marks and 4 m stripes that move with ``forward``.
        z = CAMERA_HEIGHT / dy
        x = z * dx
        stripe = np.floor((z + forward) / 4.0) % 2
        lane = (np.abs(x) < 0.08) & (np.floor((z + forward) / 3.0) % 2 == 0)
        grey = 95 + 20 * stripe
        road = np.stack([grey, grey, grey + 5], -1)
        road[lane] = (235, 235, 230)
        hit(z, dy > 0, road)
        # Facades: x = +-street_half_width, with window grids.
        for side in (-1.0, 1.0):
            z = side * street_half_width / dx
            y = z * dy
            windows = ((np.floor((z + forward) / 2.5) % 2 == 0) & (np.floor(y / 1.5) % 2 == 0))
            base = np.array((170, 150, 130)) if side > 0 else np.array((140, 150, 170))
            facade = np.broadcast_to(base, rgb.shape).copy()
            facade[windows] = (60, 70, 90)
            hit(z, (side * dx > 0) & (y > top) & (y < CAMERA_HEIGHT), facade)
        # Boxes: fronto-parallel faces at fixed z.
        for box in boxes:
            z = np.full_like(dx, box.z - forward)
            x, y = z * dx, z * dy
            inside = (np.abs(x - box.x) < box.width / 2) & (y > CAMERA_HEIGHT - box.height) & (y < CAMERA_HEIGHT)
            hit(z, inside, np.broadcast_to(np.array(box.colour, float), rgb.shape))

    sky = ~np.isfinite(depth) | (depth > max_depth)
    depth[sky] = 0.0
    # Sky gradient; distance haze on everything else.
    rgb[sky] = np.stack([135 + 60 * v[sky] / height, 180 + 40 * v[sky] / height, np.full(sky.sum(), 235.0)], -1)
    haze = np.clip(depth / max_depth, 0, 1)[..., None] * 0.5
    rgb = np.where(sky[..., None], rgb, rgb * (1 - haze) + 200 * haze)
    return np.clip(rgb, 0, 255).astype(np.uint8), depth.astype(np.float32)
