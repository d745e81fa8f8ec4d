"""One camera's range reference for scale alignment, without ROS: the recent reference messages (a PointCloud2, or a
depth Image with its camera_info), the one paired with an image by stamp (within ``scale_max_dt``), its points moved
into the camera's optical frame through tf (at the image's stamp and the reference's, through ``odom_frame`` while
the robot moves), uploaded (:func:`reference_cloud`) and projected into the image at the output size in the
frame's path on the model's device (:func:`space_clip_ros.geometry.project_points_static`: the same pixels as the
host projection space-clip-bag2dataset uses). Messages are read duck-typed.

Broken messages are refused when they arrive (:class:`ReferenceRefused`; the node counts them by reason);
a frame without a usable reference gets its reason (``scale_reason`` in diagnostics) and the held scale.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Deque, NamedTuple, Tuple

import numpy as np

from ..geometry import capacity_bucket, project_points_static
from ..stamps import format_ns, stamp_ns
from ..tf_tree import TfError, TfTree
from . import range_data
from .range_data import cloud_points, depth_image_points

#: Larger clouds are refused (a 128-beam lidar sends about 260k points; 4M is a broken or merged-map message).
MAX_REFERENCE_POINTS = 4_000_000
#: Reference points this far behind ``min_depth`` in the camera are dropped before the upload (metres).
FRONT_MARGIN_M = 0.01
#: Reference messages kept per camera, newest last.
REFERENCE_QUEUE = 10
#: What the scale_reference parameter selects: its topic (relative to the camera) and message kind.
REFERENCE_TOPICS = {"points": "scale_reference/points", "depth": "scale_reference/depth"}


class ReferenceRefused(ValueError):
    """A reference message that cannot be used; ``reason``: a stable name for the diagnostics' counters."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_cloud(msg: Any) -> None:
    """Refuse a PointCloud2 that cannot serve as a reference before keeping it: no points, too many, unreadable
    (:func:`~.range_data.check_cloud`)."""
    count = int(msg.width) * int(msg.height)
    if count == 0:
        raise ReferenceRefused("reference_empty", "the reference PointCloud2 holds no points")
    if count > MAX_REFERENCE_POINTS:
        raise ReferenceRefused("reference_too_large", f"the reference PointCloud2 holds {count} points, more than "
                               f"{MAX_REFERENCE_POINTS} (a merged map? send the sensor's own scans)")
    try:
        range_data.check_cloud(msg)
    except ValueError as error:
        raise ReferenceRefused("reference_malformed", f"the reference {error}") from None


def check_depth_image(msg: Any) -> None:
    """Refuse a depth image that cannot serve as a reference: unreadable (:func:`~.range_data.depth_image_dtype`),
    or empty."""
    try:
        range_data.depth_image_dtype(msg)
    except ValueError as error:
        raise ReferenceRefused("reference_malformed", f"the reference {error}") from None
    if int(msg.width) * int(msg.height) == 0:
        raise ReferenceRefused("reference_empty", "the reference depth image is empty")


class ReferenceQueue:
    """The camera's recent reference messages and (for a depth image) their camera_infos."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.messages: Deque[Any] = collections.deque(maxlen=REFERENCE_QUEUE)
        self.infos: Deque[Any] = collections.deque(maxlen=REFERENCE_QUEUE)
        self._lock = threading.Lock()  # subscriptions add, the inference worker reads

    def add(self, msg: Any) -> None:
        """Keep ``msg`` (raises :class:`ReferenceRefused` for a broken one)."""
        (check_cloud if self.kind == "points" else check_depth_image)(msg)
        with self._lock:
            self.messages.append(msg)

    def add_info(self, info: Any) -> None:
        with self._lock:
            self.infos.append(info)

    def nearest(self, stamp: int, max_dt_ns: int) -> Any:
        """The reference message nearest to ``stamp`` (ns) within ``max_dt_ns``; :class:`ReferenceRefused` says why
        there is none (none yet, too old, only newer ones)."""
        with self._lock:
            messages = list(self.messages)
        if not messages:
            raise ReferenceRefused("reference_none", "no reference message received yet")
        best = min(messages, key=lambda m: abs(stamp_ns(m.header.stamp) - stamp))
        dt = stamp_ns(best.header.stamp) - stamp
        if abs(dt) > max_dt_ns:
            kind = "reference_old" if dt < 0 else "reference_future"
            raise ReferenceRefused(kind, f"the nearest reference ({format_ns(stamp_ns(best.header.stamp))}) is "
                                   f"{abs(dt) / 1e9:.3f} s {'older' if dt < 0 else 'newer'} than the image "
                                   f"({format_ns(stamp)}), more than scale_max_dt {max_dt_ns / 1e9:g} s")
        return best

    def info_for(self, msg: Any) -> Any:
        with self._lock:
            infos = list(self.infos)
        if not infos:
            raise ReferenceRefused("reference_no_camera_info", "no camera_info for the reference depth image yet "
                                   "(scale_reference/camera_info)")
        key = stamp_ns(msg.header.stamp)
        return next((i for i in reversed(infos) if stamp_ns(i.header.stamp) == key), infos[-1])


def reference_points(queue: ReferenceQueue, msg: Any, dtype=np.float64) -> np.ndarray:
    """(N, 3) ``dtype`` points of the reference message ``msg`` in its own frame; NaN points dropped."""
    info = queue.info_for(msg) if queue.kind == "depth" else None
    try:
        points = cloud_points(msg, dtype) if info is None else depth_image_points(msg, info).astype(dtype)
    except ValueError as error:
        raise ReferenceRefused("reference_malformed", str(error)) from None
    if points.shape[0] == 0:
        raise ReferenceRefused("reference_empty", "the reference holds no finite points")
    return points


def _reference_in_camera(queue: ReferenceQueue, tree: TfTree, camera_frame: str, image_stamp: int, max_dt_ns: int,
                         odom_frame: str) -> Tuple[np.ndarray, np.ndarray]:
    """(float32 points of the reference nearest to ``image_stamp`` in their own frame, 4x4 camera <- their frame)."""
    msg = queue.nearest(image_stamp, max_dt_ns)
    points = reference_points(queue, msg, np.float32)
    source, source_ns = msg.header.frame_id, stamp_ns(msg.header.stamp)
    try:
        moving = bool(odom_frame) and tree.has_dynamic(camera_frame, source)
        to_camera = tree.lookup_full(camera_frame, image_stamp, source, source_ns, odom_frame if moving else "")
    except TfError as error:
        raise ReferenceRefused("reference_no_tf", f"no tf from the reference's frame to the camera's: {error}") \
            from None
    return points, to_camera


def _moved(planes: Any, to_camera: Any) -> Any:
    """(N, 3) points given as (3, N) float32 planes, moved by ``to_camera`` ((4, 4) float32 on their device).
    (A 3x3 @ 3xN product: six times faster on a CPU than the points as rows times the rotation.)"""
    import torch

    return torch.addmm(to_camera[:3, 3:], to_camera[:3, :3], planes).T


class ReferenceCloud(NamedTuple):
    """A frame's reference points on the device, before their projection: ``planes`` (4, C) float32 x, y, z and
    valid (1 or 0) in a buffer of power-of-two capacity C, in the reference's frame; ``to_camera`` (4, 4) float32,
    the move into the camera's optical frame. Their projection belongs to the frame's path (:meth:`project`), so a
    captured path replays it with the fit."""

    planes: Any
    to_camera: Any

    def project(self, size: Tuple[int, int], intrinsics: Tuple[float, float, float, float], min_depth: float,
                max_depth: float) -> Tuple[Any, Any]:
        """(pixel, depth) per buffer row through a rectified camera, depth 0 for rows that are not a pixel's
        nearest point (:func:`~space_clip_ros.geometry.project_points_static`)."""
        return project_points_static(_moved(self.planes[:3], self.to_camera), self.planes[3] > 0, size, intrinsics,
                                     min_depth, max_depth)


def reference_cloud(queue: ReferenceQueue, tree: TfTree, camera_frame: str, image_stamp: int, max_dt_ns: int,
                    odom_frame: str, min_depth: float, device: Any = "cpu") -> ReferenceCloud:
    """The camera's reference at ``image_stamp`` for the node's frame path, uploaded: its points (those not behind
    the camera) in a buffer of fixed capacity (the next power of two,
    :func:`~space_clip_ros.geometry.capacity_bucket`) and their move into ``camera_frame``: through tf at the
    reference's stamp, and through ``odom_frame`` to the camera at the image's stamp when the path between the two
    frames moves. Raises :class:`ReferenceRefused`."""
    import torch

    points, to_camera = _reference_in_camera(queue, tree, camera_frame, image_stamp, max_dt_ns, odom_frame)
    # Points behind the camera never land: left on the host (their depth in the camera, with a margin far above
    # float32 rounding, so the device's own range test decides every point near the limit). A 360-degree lidar's
    # buffer halves, and with it the projection and the fit.
    front = points @ to_camera[2, :3].astype(np.float32) >= min_depth - FRONT_MARGIN_M - to_camera[2, 3]
    if not front.all():
        points = np.compress(front, points, axis=0)  # six times faster than a boolean index here
    n = points.shape[0]
    buffer = np.zeros((4, capacity_bucket(n)), np.float32)  # planes x, y, z, valid
    buffer[:3, :n] = points.T
    buffer[3, :n] = 1.0
    move = torch.from_numpy(to_camera.astype(np.float32))
    return ReferenceCloud(torch.from_numpy(buffer).to(device, non_blocking=True), move.to(device, non_blocking=True))


def prepare_frame(request: Any, device: Any, camera: Any, settings: Any, tree: TfTree, frame_id: str) -> None:
    """Give ``request`` (a FrameRequest at ``request.stamp_ns``) what the camera's alignment and fusion need: the
    reference points and their move into the camera (:func:`reference_cloud`, projected in the frame's path; or the
    reason there is none, also counted as ``unaligned.<reason>``), on ``device``, and the camera's pose in
    ``odom_frame`` (or None, the reason in ``camera.pose_problem``)."""
    stamp = request.stamp_ns
    no_model = request.model is None  # no camera_info: nothing can be projected or carried
    if camera.aligner is not None:
        camera.aligner.configure(**settings.alignment())
        request.aligner = camera.aligner
        try:
            if no_model:
                raise ReferenceRefused("no_camera_info", "no camera_info: the reference cannot be projected")
            # Projected in the frame's path (the image taken as rectified, as the node's own back-projection).
            request.reference = reference_cloud(camera.reference, tree, frame_id, stamp,
                                                int(settings.scale_max_dt * 1e9), settings.odom_frame,
                                                settings.min_depth, device)
        except ReferenceRefused as refused:
            request.reference_reason = f"{refused.reason}: {refused}"
            camera.stats.count(f"unaligned.{refused.reason}")
    if camera.fusion is not None and no_model:
        camera.pose_problem = "no camera_info: depth not fused"
    elif camera.fusion is not None:
        camera.fusion.configure(**settings.fusion())
        request.fusion = camera.fusion
        try:
            request.pose = tree.lookup(settings.odom_frame, frame_id, stamp)
            camera.pose_problem = ""
        except TfError as error:
            camera.pose_problem = f"no pose in {settings.odom_frame}, history reset: {error}"
            camera.stats.count("temporal_reset.no_tf")
