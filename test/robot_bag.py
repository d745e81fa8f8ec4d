"""rosbag2 recordings of a robot, written by the tests and benchmarks with rosbags (no ROS): a camera (Image or
CompressedImage + CameraInfo), a lidar (PointCloud2) or a depth camera (Image + CameraInfo), and tf."""

from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from space_clip_ros.tf_tree import matrix_quaternion  # noqa: F401 (the tests' bags use it from here)

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types


def orthonormal(r: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(np.asarray(r, dtype=np.float64))
    return u @ vt


def header(ns: int, frame: str):
    return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000,
                                                                            nanosec=ns % 1_000_000_000),
                                    frame_id=frame)


def transform(ns: int, parent: str, child: str, matrix: np.ndarray):
    x, y, z, w = matrix_quaternion(matrix[:3, :3])
    tr = matrix[:3, 3]
    return T["geometry_msgs/msg/TransformStamped"](
        header=header(ns, parent), child_frame_id=child,
        transform=T["geometry_msgs/msg/Transform"](
            translation=T["geometry_msgs/msg/Vector3"](x=float(tr[0]), y=float(tr[1]), z=float(tr[2])),
            rotation=T["geometry_msgs/msg/Quaternion"](x=float(x), y=float(y), z=float(z), w=float(w))))


def tf_message(transforms: List) -> object:
    return T["tf2_msgs/msg/TFMessage"](transforms=transforms)


def image(ns: int, frame: str, rgb: np.ndarray, encoding: str = "rgb8"):
    data = rgb if encoding == "rgb8" else rgb[..., ::-1] if encoding == "bgr8" else rgb
    data = np.ascontiguousarray(data)
    height, width = data.shape[:2]
    return T["sensor_msgs/msg/Image"](header=header(ns, frame), height=height, width=width, encoding=encoding,
                                      is_bigendian=0, step=data.strides[0], data=data.reshape(-1).view(np.uint8))


def compressed(ns: int, frame: str, rgb: np.ndarray, fmt: str = "jpeg"):
    import cv2

    ok, encoded = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", rgb[..., ::-1])
    return T["sensor_msgs/msg/CompressedImage"](header=header(ns, frame), format=fmt, data=encoded.reshape(-1))


def depth_image(ns: int, frame: str, depth_m: np.ndarray, encoding: str = "16UC1"):
    if encoding == "16UC1":
        data = np.round(depth_m * 1000.0).astype("<u2")
    else:
        data = np.where(depth_m > 0, depth_m, np.nan).astype("<f4")
    height, width = data.shape
    return T["sensor_msgs/msg/Image"](header=header(ns, frame), height=height, width=width, encoding=encoding,
                                      is_bigendian=0, step=data.strides[0], data=data.reshape(-1).view(np.uint8))


def camera_info(ns: int, frame: str, size: Tuple[int, int], k: Sequence[float], p: Sequence[float] = None,
                d: Sequence[float] = (0.0, 0.0, 0.0, 0.0, 0.0), r: Sequence[float] = None):
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    p = np.hstack([k, np.zeros((3, 1))]) if p is None else np.asarray(p, dtype=np.float64).reshape(3, 4)
    r = np.eye(3) if r is None else np.asarray(r, dtype=np.float64).reshape(3, 3)
    roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return T["sensor_msgs/msg/CameraInfo"](header=header(ns, frame), height=size[0], width=size[1],
                                           distortion_model="plumb_bob", d=np.asarray(d, dtype=np.float64),
                                           k=k.ravel(), r=r.ravel(), p=p.ravel(), binning_x=0, binning_y=0, roi=roi)


def cloud(ns: int, frame: str, points: np.ndarray, extra_fields: bool = True):
    """PointCloud2 of (N, 3) points; with ``extra_fields`` the layout of a real lidar (x, y, z, intensity, ring,
    padding to 32 bytes), else packed x, y, z."""
    field = T["sensor_msgs/msg/PointField"]
    n = len(points)
    if extra_fields:
        dtype = np.dtype({"names": ["intensity", "x", "y", "z", "ring"], "formats": ["<f4", "<f4", "<f4", "<f4", "<u2"],
                          "offsets": [0, 4, 8, 12, 16], "itemsize": 32})
        fields = [field(name=name, offset=offset, datatype=kind, count=1) for name, offset, kind in
                  (("intensity", 0, 7), ("x", 4, 7), ("y", 8, 7), ("z", 12, 7), ("ring", 16, 4))]
    else:
        dtype = np.dtype({"names": ["x", "y", "z"], "formats": ["<f4"] * 3, "offsets": [0, 4, 8], "itemsize": 12})
        fields = [field(name=c, offset=4 * i, datatype=7, count=1) for i, c in enumerate("xyz")]
    data = np.zeros(n, dtype=dtype)
    data["x"], data["y"], data["z"] = points[:, 0], points[:, 1], points[:, 2]
    return T["sensor_msgs/msg/PointCloud2"](header=header(ns, frame), height=1, width=n, fields=fields,
                                            is_bigendian=False, point_step=dtype.itemsize,
                                            row_step=dtype.itemsize * n, data=data.view(np.uint8).reshape(-1),
                                            is_dense=True)


def write_bag(path: Path, messages: List[Tuple[str, int, object]], storage: str = "mcap") -> Path:
    """``messages``: (topic, recorded ns, message) in recording order."""
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    connections: Dict[str, object] = {}
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        for topic, ns, msg in messages:
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msg.__msgtype__, typestore=TS)
            writer.write(connections[topic], ns, TS.serialize_cdr(msg, msg.__msgtype__))
    return path
