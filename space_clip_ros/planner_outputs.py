"""What a planner consumes, computed from the node's depth on the model's device (no ROS): a LaserScan's ranges as
depthimage_to_laserscan computes them, and a filtered, voxel-downsampled cloud.

LaserScan (:func:`scan_geometry` on the CPU once per camera model, :func:`laser_scan` per frame on the device):
    the same numbers as ros-perception's depthimage_to_laserscan (``DepthImageToLaserScan::convert_msg``) given the
    node's ``depth/image`` and ``depth/camera_info``, except that pixels whose depth lies beyond the node's
    ``max_depth`` are +Inf there (REP 117: nothing within range), not NaN, so that costmaps with ``inf_is_valid``
    clear free space in those directions. Per column ``u`` the angle is ``-atan2((u - cx) / fx, 1)``, its index
    ``int((angle - angle_min) / angle_increment)``; over ``scan_height`` rows centred on ``cy`` the closest range in
    ``[range_min, range_max]`` wins, else +/-Inf, else NaN (``use_point``). The angles come from the rays through the
    rectified pixels (0, cy), (width - 1, cy) and (cx, cy), with image_geometry's conventions (P's fx, cx, Tx).

Filtered cloud (:func:`filtered_points`): every pixel's point in the optical frame, then range limits (Euclidean
    distance from the camera), flying-pixel removal (:func:`edge_mask`) and PCL VoxelGrid downsampling
    (:func:`voxel_downsample`: voxel ``floor(p / leaf)`` per axis, one point per occupied voxel at the centroid of its
    points). Everything stays on the depth's device; the caller downloads the kept points once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .geometry import back_project, check_focal

#: REP 103: a LaserScan lives in an x-forward frame; an optical frame's name usually ends with one of these.
OPTICAL_SUFFIXES = ("_optical_frame", "_optical")


def scan_frame_id(depth_frame_id: str, override: str = "") -> str:
    """The LaserScan's frame: ``override`` when set, else the depth's frame without ``_optical_frame`` /
    ``_optical`` (``camera_color_optical_frame`` -> ``camera_color``)."""
    if override:
        return override
    for suffix in OPTICAL_SUFFIXES:
        if depth_frame_id.endswith(suffix) and len(depth_frame_id) > len(suffix):
            return depth_frame_id[: -len(suffix)]
    return depth_frame_id


@dataclass(frozen=True)
class ScanGeometry:
    """Everything of a LaserScan that depends on the camera model only (computed once per camera_info)."""

    width: int
    height: int
    angle_min: float  # as stored in the message (float32)
    angle_max: float
    angle_increment: float
    first_row: int  # rows first_row .. first_row + rows - 1 feed the scan
    rows: int
    cx: float  # float32, as depthimage_to_laserscan keeps it
    constant_x: float  # float32 1 / fx
    index: np.ndarray  # (width,) int64 range index of each column, -1 where it falls outside the scan


def _camera_matrices(k: Sequence[float], p: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    p = np.asarray(p, dtype=np.float64).reshape(3, 4)
    if p[0, 0] == 0:  # P unset (some drivers): a camera without rectification, P = [K | 0]
        p = np.hstack([k, np.zeros((3, 1))])
    return k, p


def _rectify(points: np.ndarray, k: np.ndarray, d: np.ndarray, r: np.ndarray, p: np.ndarray,
             distortion_model: str) -> np.ndarray:
    """image_geometry's rectifyPoint: the raw pixels unchanged when the distortion is all zeros, else undistorted
    (float32, as image_geometry does) and projected with R and P."""
    if not d.size or not np.any(d):
        return points
    import cv2

    raw = points.astype(np.float32).reshape(-1, 1, 2)
    if distortion_model == "equidistant":
        rect = cv2.fisheye.undistortPoints(raw, k, d[:4], R=r, P=p[:, :3])
    else:  # plumb_bob, rational_polynomial
        rect = cv2.undistortPoints(raw, k, d, R=r, P=p)
    return rect.reshape(-1, 2).astype(np.float64)


def scan_geometry(width: int, height: int, k: Sequence[float], p: Sequence[float], scan_height: int = 1,
                  d: Sequence[float] = (), r: Optional[Sequence[float]] = None,
                  distortion_model: str = "plumb_bob") -> ScanGeometry:
    """The scan's angles, rows and per-column indices for a ``width`` x ``height`` depth image with camera_info K, P
    (row-major 9 and 12 values), D, R. Raises ``ValueError`` with depthimage_to_laserscan's message when
    ``scan_height`` rows centred on cy do not fit the image."""
    if width < 2 or height < 1:
        raise ValueError(f"a LaserScan needs a depth image at least 2 pixels wide, got {width}x{height}")
    if int(scan_height) < 1:
        raise ValueError(f"scan_height must be >= 1, got {scan_height}")
    k_m, p_m = _camera_matrices(k, p)
    r_m = np.eye(3) if r is None or not np.any(r) else np.asarray(r, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy, tx, ty = p_m[0, 0], p_m[1, 1], p_m[0, 2], p_m[1, 2], p_m[0, 3], p_m[1, 3]
    raw = np.array([[0.0, cy], [width - 1.0, cy], [cx, cy]])
    rect = _rectify(raw, k_m, np.asarray(d, dtype=np.float64), r_m, p_m, distortion_model)
    rays = np.stack([(rect[:, 0] - cx - tx) / fx, (rect[:, 1] - cy - ty) / fy, np.ones(3)], axis=1)

    def angle(a: np.ndarray, b: np.ndarray) -> float:
        return math.acos(float(np.dot(a, b)) / (float(np.linalg.norm(a)) * float(np.linalg.norm(b))))

    left, right, centre = rays
    angle_max = np.float32(angle(left, centre))
    angle_min = np.float32(-angle(centre, right))
    angle_increment = np.float32((angle_max - angle_min) / np.float32(width - 1))
    if scan_height / 2.0 > cy or scan_height / 2.0 > height - cy:
        raise ValueError(f"scan_height ( {scan_height} pixels) is too large for the image height.")
    first_row = int(cy - scan_height / 2.0)
    cx32, constant_x = np.float32(cx), np.float32(1.0 / fx)
    u = np.arange(width, dtype=np.float32)
    theta = -np.arctan2((u - cx32).astype(np.float64) * np.float64(constant_x), 1.0)
    index = np.trunc((theta - np.float64(angle_min)) / np.float64(angle_increment)).astype(np.int64)
    index[(index < 0) | (index >= width)] = -1
    return ScanGeometry(width=int(width), height=int(height), angle_min=float(angle_min),
                        angle_max=float(angle_max), angle_increment=float(angle_increment), first_row=first_row,
                        rows=int(scan_height), cx=float(cx32), constant_x=float(constant_x), index=index)


def laser_scan(depth_rows: Tensor, geometry: ScanGeometry, range_min: float, range_max: float,
               index: Optional[Tensor] = None) -> Tensor:
    """(width,) float32 ranges from the scan's rows of depth (``(rows, width)`` metres, NaN unknown, +Inf beyond the
    measurable range), on ``depth_rows``' device. ``index``: ``geometry.index`` already on that device (cached by the
    caller); made here otherwise."""
    device = depth_rows.device
    rows, width = depth_rows.shape
    if width != geometry.width or rows != geometry.rows:
        raise ValueError(f"scan rows are {rows}x{width}, the scan geometry wants {geometry.rows}x{geometry.width}")
    if index is None:
        index = torch.from_numpy(geometry.index).to(device)
    z = depth_rows.float()
    u = torch.arange(width, dtype=torch.float32, device=device)
    # depthimage_to_laserscan: x = (u - cx) * depth * (1 / fx) in float, r = sqrt(x^2 + z^2) in double.
    x = ((u - geometry.cx) * z * geometry.constant_x).double()
    r = torch.sqrt(x * x + z.double() * z.double()).float()
    r = torch.where(torch.isfinite(z), r, z)
    idx = index.expand(rows, width).reshape(-1)
    r = r.reshape(-1)
    usable = idx >= 0
    in_range = usable & torch.isfinite(r) & (r >= np.float32(range_min)) & (r <= np.float32(range_max))
    inf = float("inf")
    closest = torch.full((width,), inf, dtype=torch.float32, device=device)
    closest.scatter_reduce_(0, idx.clamp(min=0), torch.where(in_range, r, torch.full_like(r, inf)), "amin")
    # No range within limits: the last +/-Inf in depthimage_to_laserscan's order (rows, then columns) wins.
    infinite = usable & torch.isinf(r)
    order = torch.arange(r.numel(), device=device)
    last = torch.full((width,), -1, dtype=torch.int64, device=device)
    last.scatter_reduce_(0, idx.clamp(min=0), torch.where(infinite, order, torch.full_like(order, -1)), "amax")
    infinite_value = r[last.clamp(min=0)]
    nan = torch.full((width,), float("nan"), dtype=torch.float32, device=device)
    ranges = torch.where(last >= 0, infinite_value, nan)
    return torch.where(torch.isfinite(closest), closest, ranges)


def scan_rows(depth: Tensor, geometry: ScanGeometry, min_depth: float, max_depth: float) -> Tensor:
    """The scan's rows of the model's depth ``depth`` (before the node's range mask) as the node publishes them (NaN
    below ``min_depth``), except that depth beyond ``max_depth`` is +Inf (REP 117: nothing within range)."""
    rows = depth[geometry.first_row:geometry.first_row + geometry.rows].float()
    rows = torch.where(rows > max_depth, torch.full_like(rows, float("inf")), rows)
    return rows.masked_fill(rows < min_depth, float("nan"))


def edge_mask(depth: Tensor, threshold: float) -> Tensor:
    """(H, W) bool, True where a pixel's depth jumps from one of its 4-neighbours by more than ``threshold`` times
    its own depth (a flying pixel at a depth edge). Neighbours without depth (NaN) and outside the image are
    ignored; ``threshold`` <= 0 marks nothing."""
    flying = torch.zeros(depth.shape, dtype=torch.bool, device=depth.device)
    if threshold <= 0:
        return flying
    limit = depth * threshold
    dv = (depth[1:, :] - depth[:-1, :]).abs()  # pairs (v, v + 1)
    du = (depth[:, 1:] - depth[:, :-1]).abs()  # pairs (u, u + 1)
    flying[:-1, :] |= dv > limit[:-1, :]
    flying[1:, :] |= dv > limit[1:, :]
    flying[:, :-1] |= du > limit[:, :-1]
    flying[:, 1:] |= du > limit[:, 1:]
    return flying


def voxel_downsample(points: Tensor, leaf: float) -> Tensor:
    """PCL VoxelGrid: (N, 3) finite points -> one point per occupied voxel ``floor(p / leaf)`` at the centroid of
    its points, ordered by voxel. ``leaf`` <= 0 returns the points unchanged."""
    if leaf <= 0 or points.shape[0] == 0:
        return points
    kept, count = voxel_downsample_static(points, torch.ones(points.shape[0], dtype=torch.bool,
                                                             device=points.device), leaf)
    return kept[:int(count)]


#: The int64 voxel key of a dropped point: above every real key, so dropped points sort last.
_NO_VOXEL = 2 ** 62


def voxel_downsample_static(points: Tensor, keep: Tensor, leaf: float,
                            bound: float = float("inf")) -> Tuple[Tensor, Tensor]:
    """:func:`voxel_downsample` of the points where ``keep`` is True, in static shapes: a (N, 3) buffer whose first
    ``count`` rows are the centroids ordered by voxel, and ``count`` (a 0-d int64 tensor on the points' device).

    Voxels by one stable sort of integer keys (z, then y, then x; dropped points last), segment starts where the key
    changes, sums by scatter-add in that order (within a voxel the points keep their own order, so the float32
    sums are those of adding the kept points alone, as before). With ``bound`` (every kept coordinate within
    +/- bound, e.g. the range limit) the keys are offset by a fixed amount, int32 when the grid fits, and need no
    reduction over the points first; otherwise they are offset by the kept points' smallest key, in int64."""
    return _voxel_planes(points[:, 0], points[:, 1], points[:, 2], keep, leaf, bound)


def _voxel_planes(x: Tensor, y: Tensor, z: Tensor, keep: Tensor, leaf: float,
                  bound: float, capacity: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:func:`voxel_downsample_static` of points given as three (N,) planes. ``capacity``: only the first
    ``capacity`` points in voxel order are summed (the kept ones come first): the count is -1 when more were kept
    (the caller runs it again with a larger capacity)."""
    n = x.shape[0]
    device = x.device
    keys = [torch.floor(axis / leaf) for axis in (x, y, z)]
    if math.isfinite(bound):
        offset = math.floor(bound / leaf) + 2  # floor(p / leaf) of |p| <= bound lies in [-offset + 1, offset - 1]
        extent = 2 * offset + 1
        dtype = torch.int32 if extent ** 3 < 2 ** 31 - 1 else torch.int64
        kx, ky, kz = ((key + offset).to(dtype) for key in keys)  # integers before any product: float32 holds them
        linear = (kz * extent + ky) * extent + kx  # only up to 2^24; x fastest, as PCL
        none = torch.iinfo(dtype).max
    else:
        big = torch.full((), float("inf"), device=device)
        low = [torch.where(keep, key, big).amin() for key in keys]
        high = [torch.where(keep, key, -big).amax() for key in keys]
        span = [torch.where(torch.isfinite(h - lo), h - lo + 1, torch.ones_like(lo)).to(torch.int64)
                for lo, h in zip(low, high, strict=True)]
        kx, ky, kz = (torch.where(keep, key - torch.where(torch.isfinite(lo), lo, torch.zeros_like(lo)),
                                  torch.zeros_like(key)).to(torch.int64) for key, lo in zip(keys, low, strict=True))
        linear = (kz * span[1] + ky) * span[0] + kx
        none = _NO_VOXEL
    linear.masked_fill_(~keep, none)
    ordered, order = torch.sort(linear, stable=True)
    overflow = None
    if capacity is not None and capacity < n:
        overflow = keep.sum() > capacity
        ordered, order, n = ordered[:capacity], order[:capacity], capacity
    starts = torch.empty(n, dtype=torch.bool, device=device)
    starts[:1].fill_(True)
    torch.ne(ordered[1:], ordered[:-1], out=starts[1:])
    dropped = ordered == none
    starts &= ~dropped
    segment = (torch.cumsum(starts, 0, dtype=torch.int64) - 1).masked_fill_(dropped, n)  # dropped: a spare row
    counts = torch.zeros(n + 1, dtype=torch.float32, device=device).scatter_add_(
        0, segment, torch.ones(n, dtype=torch.float32, device=device))[:n].clamp_(min=1.0)
    centroid = torch.empty((3, n), dtype=torch.float32, device=device)
    for row, axis in enumerate((x, y, z)):
        total = torch.zeros(n + 1, dtype=torch.float32, device=device).scatter_add_(0, segment, axis[order])
        torch.div(total[:n], counts, out=centroid[row])
    count = starts.sum()
    if overflow is not None:
        count = torch.where(overflow, torch.full_like(count, -1), count)
    return centroid.T, count


def compact(points: Tensor, keep: Tensor) -> Tuple[Tensor, Tensor]:
    """The rows of ``points`` where ``keep`` is True moved to the front in order, in static shapes: (a buffer of
    ``points``' shape, the count as a 0-d int64 tensor). Rows past the count are zeros."""
    n = points.shape[0]
    slot = torch.where(keep, torch.cumsum(keep.to(torch.int64), 0) - 1, torch.full((n,), n, dtype=torch.int64,
                                                                                    device=points.device))
    out = torch.zeros((n + 1,) + tuple(points.shape[1:]), dtype=points.dtype, device=points.device)
    out.index_copy_(0, slot, points)
    return out[:n], keep.sum()


def filtered_points(depth: Tensor, fx: float, fy: float, cx: float, cy: float, min_range: float = 0.0,
                    max_range: float = float("inf"), edge_threshold: float = 0.0, voxel: float = 0.0,
                    stride: int = 1) -> Tensor:
    """(N, 3) float32 x, y, z in the optical frame from every pixel with depth (NaN = none) of ``depth`` (H, W):
    flying pixels (:func:`edge_mask`, on the full image) and points outside [min_range, max_range] (distance from
    the camera) dropped, every ``stride``-th row and column kept, then :func:`voxel_downsample`. The count is read
    on the host; the node uses :func:`filtered_points_static` and reads it with everything else it publishes."""
    kept, count = filtered_points_static(depth, fx, fy, cx, cy, min_range, max_range, edge_threshold, voxel, stride)
    return kept[:int(count)]


def filtered_points_static(depth: Tensor, fx: float, fy: float, cx: float, cy: float, min_range: float = 0.0,
                           max_range: float = float("inf"), edge_threshold: float = 0.0, voxel: float = 0.0,
                           stride: int = 1, capacity: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """:func:`filtered_points` in static shapes: a (H' x W', 3) buffer (H', W' the strided size; at most
    ``capacity`` rows) whose first ``count`` rows are the points, and ``count`` (0-d int64 on the depth's device).
    Nothing is read on the host. ``capacity`` (with a voxel grid): sum only the first ``capacity`` kept points in
    voxel order, most of the work; ``count`` is -1 when more points were kept than that (run it again without)."""
    check_focal(fx, fy, stride)
    z = depth.float()
    keep = (z > 0) & (z <= max_range)  # NaN fails both; a point's distance is at least its depth
    if edge_threshold > 0:
        keep &= ~edge_mask(z, edge_threshold)
    z, keep = z[::stride, ::stride], keep[::stride, ::stride]
    z = torch.where(keep, z, torch.zeros_like(z))
    x, y = back_project(z, fx, fy, cx, cy, stride)
    squared = x * x + y * y + z * z
    keep = keep & (squared >= min_range * min_range) & (squared <= max_range * max_range)
    keep = keep.reshape(-1)
    if voxel <= 0:
        return compact(torch.stack([x.reshape(-1), y.reshape(-1), z.reshape(-1)], dim=1), keep)
    return _voxel_planes(x.reshape(-1), y.reshape(-1), z.reshape(-1), keep, voxel, max_range,  # |p| <= distance
                         capacity)
