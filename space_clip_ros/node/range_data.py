"""Points of range messages, read duck-typed (rclpy messages and rosbags' alike), without ROS: a PointCloud2's
x/y/z, a depth image back-projected through its camera_info. Used by space-clip-bag2dataset and by the depth
node's scale reference, so a recording and a live robot give the same points."""

from __future__ import annotations

from typing import Any

import numpy as np

#: PointField datatypes of coordinates.
FIELD_TYPES = {7: "f4", 8: "f8"}


def message_bytes(data: Any) -> np.ndarray:
    """A message's ``data`` (bytes, array.array, numpy array or list) as a uint8 array, without a copy where it can."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def check_cloud(msg: Any) -> None:
    """Raise ``ValueError`` for a PointCloud2 whose points cannot be read: no FLOAT32/FLOAT64 x, y, z fields, or
    data shorter than its rows. Reads no point."""
    fields = {f.name: f for f in msg.fields}
    missing = [n for n in "xyz" if n not in fields]
    if missing:
        raise ValueError(f"PointCloud2 has no {'/'.join(missing)} field (fields: {sorted(fields)})")
    if any(fields[n].datatype not in FIELD_TYPES for n in "xyz"):
        raise ValueError("PointCloud2 x/y/z fields must be FLOAT32 or FLOAT64")
    if int(msg.row_step) * int(msg.height) > len(msg.data) or int(msg.point_step) * int(msg.width) > msg.row_step:
        raise ValueError(f"PointCloud2 data holds {len(msg.data)} bytes, less than its {msg.height} rows of "
                         f"{msg.row_step}")


def cloud_points(msg: Any, dtype=np.float64) -> np.ndarray:
    """(N, 3) ``dtype`` x, y, z of a PointCloud2 (any point_step and field order; NaN points dropped)."""
    check_cloud(msg)
    fields = {f.name: f for f in msg.fields}
    order = ">" if msg.is_bigendian else "<"
    count = int(msg.width) * int(msg.height)
    data = message_bytes(msg.data)
    rows = data[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)[:, : msg.point_step * msg.width]
    offsets = [fields[n].offset for n in "xyz"]
    if (all(fields[n].datatype == 7 for n in "xyz") and offsets == [offsets[0], offsets[0] + 4, offsets[0] + 8]
            and offsets[0] % 4 == 0 and msg.point_step % 4 == 0):  # the usual layout: x, y, z float32 side by side
        floats = np.ascontiguousarray(rows).view(order + "f4").reshape(count, msg.point_step // 4)
        xyz = floats[:, offsets[0] // 4:offsets[0] // 4 + 3].astype(dtype)
    else:
        layout = np.dtype({"names": list("xyz"), "formats": [order + FIELD_TYPES[fields[n].datatype] for n in "xyz"],
                           "offsets": offsets, "itemsize": int(msg.point_step)})
        points = np.ascontiguousarray(rows).view(layout).reshape(count)
        xyz = np.stack([points["x"], points["y"], points["z"]], axis=1).astype(dtype)
    if np.isfinite(xyz).all():  # the usual case, checked fast (a sum along rows is ten times slower)
        return xyz
    return xyz[np.isfinite(xyz[:, 0] + xyz[:, 1] + xyz[:, 2])]  # a NaN or inf coordinate makes the sum non-finite


def depth_image_dtype(msg: Any) -> np.dtype:
    """The pixel dtype of a depth image (16UC1 millimetres or 32FC1 metres); ``ValueError`` for another encoding or
    data shorter than its rows. Reads no pixel."""
    encoding = msg.encoding
    if encoding not in ("16UC1", "mono16", "32FC1"):
        raise ValueError(f"depth image encoding {encoding!r}: expected 16UC1 (mm) or 32FC1 (m)")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(np.float32 if encoding == "32FC1" else np.uint16).newbyteorder(">" if msg.is_bigendian else "<")
    if len(msg.data) < step * height or step < width * dtype.itemsize:
        raise ValueError(f"depth image data holds {len(msg.data)} bytes, less than step*height = {step * height}")
    return dtype


def depth_image_points(msg: Any, info: Any) -> np.ndarray:
    """(N, 3) points of a depth image (16UC1 millimetres or 32FC1 metres, 0/NaN = none) in its optical frame,
    back-projected with its camera_info's K (pixels undistorted first when it has distortion)."""
    dtype = depth_image_dtype(msg)
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = message_bytes(msg.data)
    rows = data[: step * height].reshape(height, step)[:, : width * dtype.itemsize]
    depth = np.ascontiguousarray(rows).view(dtype).reshape(height, width).astype(np.float64)
    if encoding != "32FC1":
        depth /= 1000.0
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u]
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    d = np.asarray(info.d, dtype=np.float64)
    pixels = np.stack([u, v], axis=1).astype(np.float64)
    if np.any(d):
        import cv2

        normalised = cv2.undistortPoints(pixels.reshape(-1, 1, 2), k, d).reshape(-1, 2)
    else:
        normalised = (pixels - k[:2, 2]) / np.array([k[0, 0], k[1, 1]])
    return np.concatenate([normalised * z[:, None], z[:, None]], axis=1)
