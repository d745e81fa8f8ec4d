"""space-clip-player: publish a rosbag2 recording, a folder of images, or a KITTI raw drive with its calibration, as
a camera.

    space-clip-player --ros-args -p source:=/data/kitti/2011_09_26/2011_09_26_drive_0002_sync -p rate:=10.0
    space-clip-player --ros-args -p source:=/data/bags/drive_01 -r __ns:=/camera     # rosbag2 (mcap or sqlite3)

A recording (a rosbag2 folder with metadata.yaml, or one .mcap / .db3 file; read with the ``rosbags`` library) is
played with its original messages and stamps: its Image or CompressedImage topic (``image_topic``; '' = the only
one) on ``image`` or ``image/compressed``, and its CameraInfo topic (``camera_info_topic``; '' = the one beside it)
on ``camera_info``, at the recorded timing (``rate`` 0, the default) or ``rate`` frames per second; once, or again
and again with ``loop`` (each later pass shifts the stamps by the recording's length, so time never runs backwards).
Playback starts when ``min_subscribers`` (1) subscribe to the image topic (``wait_for_subscribers``).

A folder publishes ``image`` (rgb8) and ``camera_info`` with one stamp per frame at ``rate`` (0: 5 Hz), looping by
default. A KITTI drive (a folder with ``image_02/data``) takes its intrinsics from ``../calib_cam_to_cam.txt``
(P_rect_02, S_rect_02); a plain folder from the ``fx, fy, cx, cy`` parameters (none published when fx is 0). The
default source is the synthetic KITTI-style drive shipped with the package.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from ..kitti_calib import read_kitti_calib
from ..stamps import stamp_ns
from . import messages
from .bags import Recording, RecordingError, is_recording

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
FOLDER_RATE_HZ = 5.0  # a folder's frame rate when ``rate`` is 0
BAG_TICK_S = 0.002  # how often a recording's due messages are checked
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
        source = Path(self.get_parameter("source").value)
        bag = is_recording(source)
        self.declare_parameter("rate", 0.0)  # 0: the recorded timing (recording), 5 Hz (folder)
        self.declare_parameter("loop", not bag)
        self.declare_parameter("count", 0)
        self.declare_parameter("frame_id", "camera_optical_frame")
        self.declare_parameter("wait_for_subscribers", True)
        self.declare_parameter("min_subscribers", 1)  # with wait_for_subscribers: start when this many listen
        self.declare_parameter("image_topic", "")
        self.declare_parameter("camera_info_topic", "")
        for name in ("fx", "fy", "cx", "cy"):
            self.declare_parameter(name, 0.0)
        self.sent = 0
        self.done = False
        rate = float(self.get_parameter("rate").value)
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        if bag:
            self.recording = Recording(source, self.get_parameter("image_topic").value,
                                       self.get_parameter("camera_info_topic").value)
            compressed = self.recording.image_type is CompressedImage
            self.image_pub = self.create_publisher(self.recording.image_type,
                                                   "image/compressed" if compressed else "image", qos)
            self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
            self._bag_state()
            self.timer = self.create_timer(BAG_TICK_S, self._tick_bag)
            self.get_logger().info(
                f"playing {self.recording.frames} frame(s) of {self.recording.image_topic}"
                + (f" with {self.recording.info_topic}" if self.recording.info_topic else " (no camera_info topic)")
                + f" from {source} " + (f"at {rate} Hz" if rate > 0 else "at the recorded timing"))
            return
        self.recording = None
        self.frames = list_frames(source)
        self.images = [self._load(p) for p in self.frames]
        self.info = self._camera_info(source)
        self.image_pub = self.create_publisher(Image, "image", qos)
        self.info_pub = self.create_publisher(CameraInfo, "camera_info", qos)
        self.timer = self.create_timer(1.0 / (rate if rate > 0 else FOLDER_RATE_HZ), self._tick)
        self.get_logger().info(f"publishing {len(self.frames)} frame(s) from {source} at "
                               f"{rate if rate > 0 else FOLDER_RATE_HZ} Hz"
                               + ("" if self.info else " (no camera_info: set fx, fy, cx, cy)"))

    # ------------------------------------------------------------------ recordings
    def _bag_state(self) -> None:
        self._messages = None  # the current pass's iterator
        self._next = None  # the message waiting for its time
        self._offset_ns = 0  # added to every stamp: the earlier passes' length
        self._start = 0.0  # wall clock of the pass's first message
        self._first_ns: Optional[int] = None
        self._images_in_pass = 0

    def _tick_bag(self) -> None:
        if self.done:
            return
        if (self.get_parameter("wait_for_subscribers").value
                and self.image_pub.get_subscription_count() < int(self.get_parameter("min_subscribers").value)):
            return
        rate = float(self.get_parameter("rate").value)
        count = int(self.get_parameter("count").value)
        now = time.monotonic()
        if self._messages is None:
            self._messages, self._start, self._first_ns, self._images_in_pass = self.recording.messages(), now, None, 0
        while True:
            if self._next is None:
                self._next = next(self._messages, None)
                if self._next is None:  # the end of a pass
                    if not self.get_parameter("loop").value and not (count and self.sent < count):
                        self.done = True
                        return
                    self._offset_ns += self.recording.duration_ns + 100_000_000
                    self._messages = None
                    return
            kind, recorded_ns, msg = self._next
            if self._first_ns is None:
                self._first_ns = recorded_ns
            due = self._images_in_pass / rate if rate > 0 else (recorded_ns - self._first_ns) / 1e9
            if now - self._start < due:
                return
            if self._offset_ns:
                shifted = stamp_ns(msg.header.stamp) + self._offset_ns
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(shifted, 1_000_000_000)
            if kind == "image":
                self.image_pub.publish(msg)
                self.sent += 1
                self._images_in_pass += 1
                if count and self.sent >= count:
                    self.done = True
                    return
            else:
                self.info_pub.publish(msg)
            self._next = None

    # ------------------------------------------------------------------ folders
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


def main(args=None) -> int:
    from .fastdds import use_shipped_profile

    use_shipped_profile()
    rclpy.init(args=args)
    try:
        node = PlayerNode()
    except (RecordingError, ValueError) as error:
        print(f"space-clip-player: error: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
        time.sleep(0.5)  # let the last samples go out before the participant disappears
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
