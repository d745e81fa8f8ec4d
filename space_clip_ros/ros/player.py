"""space-clip-player: publish a folder of images, or a KITTI raw drive with its calibration, as a camera.

    space-clip-player --ros-args -p source:=/data/kitti/2011_09_26/2011_09_26_drive_0002_sync -p rate:=10.0

Publishes ``image`` (rgb8) and ``camera_info`` with one stamp per frame. A KITTI drive (a folder with
``image_02/data``) takes its intrinsics from ``../calib_cam_to_cam.txt`` (P_rect_02, S_rect_02); a plain folder
from the ``fx, fy, cx, cy`` parameters (none published when fx is 0). The default source is the synthetic KITTI-style
drive shipped with the package.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from ..kitti_calib import read_kitti_calib
from . import messages

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
SAMPLE_DRIVE = (Path(__file__).resolve().parents[1] / "data" / "kitti_sample" / "2011_09_26"
                / "2011_09_26_drive_0001_sync")


def kitti_camera_info(calib_path: Path, camera: str = "02", frame_id: str = "camera_optical_frame") -> CameraInfo:
    calib = read_kitti_calib(calib_path)
    try:
        p = calib[f"P_rect_{camera}"]
        width, height = (int(round(v)) for v in calib[f"S_rect_{camera}"])
    except KeyError as error:
        raise ValueError(f"{calib_path} has no {error.args[0]}: not a KITTI calib_cam_to_cam.txt") from None
    info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
    info.header.frame_id = frame_id
    info.d = [0.0] * 5
    info.k = [p[0], p[1], p[2], p[4], p[5], p[6], p[8], p[9], p[10]]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = p.tolist()
    return info


def list_frames(source: Path) -> List[Path]:
    folder = source / "image_02" / "data" if (source / "image_02" / "data").is_dir() else source
    frames = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []
    if not frames:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return frames


class PlayerNode(Node):
    """Publishes frames at ``rate`` Hz; ``count`` frames in all (0: each frame once, or forever with ``loop``)."""

    def __init__(self, node_name: str = "image_player", **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        self.declare_parameter("source", str(SAMPLE_DRIVE))
        self.declare_parameter("rate", 5.0)
        self.declare_parameter("loop", True)
        self.declare_parameter("count", 0)
        self.declare_parameter("frame_id", "camera_optical_frame")
        self.declare_parameter("wait_for_subscribers", True)
        for name in ("fx", "fy", "cx", "cy"):
            self.declare_parameter(name, 0.0)
        source = Path(self.get_parameter("source").value)
        self.frames = list_frames(source)
        self.images = [self._load(p) for p in self.frames]
        self.info = self._camera_info(source)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.create_publisher(messages.Image, "image", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.sent = 0
        self.done = False
        self.timer = self.create_timer(1.0 / float(self.get_parameter("rate").value), self._tick)
        self.get_logger().info(f"publishing {len(self.frames)} frame(s) from {source} at "
                               f"{self.get_parameter('rate').value} Hz"
                               + ("" if self.info else " (no camera_info: set fx, fy, cx, cy)"))

    def _load(self, path: Path) -> np.ndarray:
        import cv2

        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"could not read image {path}")
        return np.ascontiguousarray(bgr[..., ::-1])

    def _camera_info(self, source: Path) -> Optional[CameraInfo]:
        frame_id = self.get_parameter("frame_id").value
        calib = source.parent / "calib_cam_to_cam.txt"
        if (source / "image_02").is_dir() and calib.is_file():
            return kitti_camera_info(calib, frame_id=frame_id)
        fx, fy, cx, cy = (float(self.get_parameter(n).value) for n in ("fx", "fy", "cx", "cy"))
        if fx <= 0:
            return None
        height, width = self.images[0].shape[:2]
        info = CameraInfo(width=width, height=height, distortion_model="plumb_bob")
        info.header.frame_id = frame_id
        info.d = [0.0] * 5
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _tick(self) -> None:
        if self.done:
            return
        if self.get_parameter("wait_for_subscribers").value and self.image_pub.get_subscription_count() == 0:
            return
        count = int(self.get_parameter("count").value)
        loop = bool(self.get_parameter("loop").value)
        limit = count if count > 0 else (None if loop else len(self.frames))
        if limit is not None and self.sent >= limit:
            self.done = True
            return
        rgb = self.images[self.sent % len(self.images)]
        stamp = self.get_clock().now().to_msg()
        if self.info is not None:
            self.info.header.stamp = stamp
            self.info_pub.publish(self.info)
        header = Header(stamp=stamp, frame_id=self.get_parameter("frame_id").value)
        self.image_pub.publish(messages.rgb_to_image(rgb, header))
        self.sent += 1


def main(args=None) -> None:
    from .fastdds import use_shipped_profile

    use_shipped_profile()
    rclpy.init(args=args)
    node = PlayerNode()
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.5)  # let the last samples go out before the participant disappears
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
