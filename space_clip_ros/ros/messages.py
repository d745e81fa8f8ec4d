"""numpy -> the sensor_msgs the node publishes (images, camera_info, clouds, scans, diagnostics). Reading messages:
:mod:`space_clip_ros.node.decoding`."""

from __future__ import annotations

import array
import sys
from typing import Any, Sequence

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2, PointField

from ..geometry import scale_intrinsics


def message_data(values: np.ndarray) -> "array.array[int]":
    """The bytes of a numpy array as the ``array.array('B')`` that rosidl messages hold: one copy, no per-byte
    checks (assigning ``bytes`` to a message field makes a second copy)."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(values).reshape(-1).view(np.uint8)))  # also when empty
    return out


def rgb_to_image(rgb: np.ndarray, header, encoding: str = "rgb8") -> Image:
    """HxWx3 uint8 RGB as an rgb8 (or bgr8) Image."""
    if encoding == "bgr8":
        rgb = rgb[..., ::-1]
    msg = Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, is_bigendian=0,
                step=rgb.shape[1] * 3)
    msg.data = message_data(rgb)
    return msg


def depth_to_image(depth: np.ndarray, header) -> Image:
    """REP 118: 32FC1 metres along the optical axis, NaN where unknown, native byte order."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    msg = Image(header=header, height=depth.shape[0], width=depth.shape[1], encoding="32FC1",
                is_bigendian=int(sys.byteorder == "big"), step=depth.shape[1] * 4)
    msg.data = message_data(depth)
    return msg


def scale_camera_info(info: CameraInfo, width: int, height: int, header=None) -> CameraInfo:
    """The CameraInfo of ``info``'s image resized to width x height: K, P and ROI scaled, size replaced."""
    sx, sy = width / float(info.width), height / float(info.height)
    k, p = scale_intrinsics(np.asarray(info.k), np.asarray(info.p), sx, sy)
    out = CameraInfo()
    out.header = header if header is not None else info.header
    out.width, out.height = int(width), int(height)
    out.distortion_model, out.d, out.r = info.distortion_model, list(info.d), list(info.r)
    out.k, out.p = k.ravel().tolist(), p.ravel().tolist()
    out.binning_x, out.binning_y = info.binning_x, info.binning_y
    roi = info.roi
    out.roi.x_offset, out.roi.width = int(round(roi.x_offset * sx)), int(round(roi.width * sx))
    out.roi.y_offset, out.roi.height = int(round(roi.y_offset * sy)), int(round(roi.height * sy))
    out.roi.do_rectify = roi.do_rectify
    return out


def cloud_message(buffer: np.ndarray, header) -> PointCloud2:
    """PointCloud2 from (h, w, 4) float32 rows (x, y, z, pad; point_step 16) or (h, w, 8) with the packed colour
    at 16 (point_step 32), as :func:`space_clip_ros.dense_outputs.cloud_buffer` and
    test/oracles.py lay them out; or (N, 3) finite points: an unorganized,
    dense x/y/z cloud (height 1, point_step 12)."""
    if buffer.ndim == 2 and buffer.shape[1] == 3 and buffer.dtype == np.float32:
        return _unorganized_cloud(buffer, header)
    if buffer.ndim != 3 or buffer.shape[2] not in (4, 8) or buffer.dtype != np.float32:
        raise ValueError(f"cloud rows must be (h, w, 4 or 8) or (N, 3) float32, got {buffer.shape} {buffer.dtype}")
    height, width, words = buffer.shape
    step = words * 4
    fields = _xyz_fields()
    if words == 8:
        fields.append(PointField(name="rgb", offset=16, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2(header=header, height=height, width=width, fields=fields,
                      is_bigendian=sys.byteorder == "big", point_step=step, row_step=step * width, is_dense=False)
    msg.data = message_data(buffer)
    return msg


def _xyz_fields():
    return [PointField(name=n, offset=o, datatype=PointField.FLOAT32, count=1) for n, o in (("x", 0), ("y", 4),
                                                                                          ("z", 8))]


def _unorganized_cloud(points: np.ndarray, header) -> PointCloud2:
    msg = PointCloud2(header=header, height=1, width=int(points.shape[0]), fields=_xyz_fields(),
                      is_bigendian=sys.byteorder == "big", point_step=12, row_step=12 * int(points.shape[0]),
                      is_dense=True)
    msg.data = message_data(points)
    return msg


def scan_message(ranges: np.ndarray, geometry, header, frame_id: str, range_min: float, range_max: float,
                 scan_time: float = 0.0) -> LaserScan:
    """sensor_msgs/LaserScan from :func:`space_clip_ros.planner_outputs.laser_scan` ranges and their
    :class:`~space_clip_ros.planner_outputs.ScanGeometry`, in ``frame_id`` (x forward), stamped as the depth image."""
    msg = LaserScan(angle_min=geometry.angle_min, angle_max=geometry.angle_max,
                    angle_increment=geometry.angle_increment, time_increment=0.0, scan_time=float(scan_time),
                    range_min=float(range_min), range_max=float(range_max))
    msg.header.stamp, msg.header.frame_id = header.stamp, frame_id
    msg.ranges = array.array("f", np.ascontiguousarray(ranges, dtype=np.float32).tobytes())
    return msg


def diagnostic_array(statuses: Sequence[Any], stamp: Any) -> DiagnosticArray:
    """/diagnostics from :class:`~space_clip_ros.node.diagnostics.Status` values (name, level, message, values)."""
    array = DiagnosticArray(status=[DiagnosticStatus(
        name=s.name, hardware_id="space_clip_ros", level=bytes([s.level]), message=s.message,
        values=[KeyValue(key=k, value=v) for k, v in s.values.items()]) for s in statuses])
    array.header.stamp = stamp
    return array
