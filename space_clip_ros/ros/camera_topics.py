"""One camera's topics on the depth node: a publisher per output (reliable, depth 5) made at configure, and at
activate the image subscription (:mod:`.image_subscription`), camera_info and, with ``scale_reference``, the
reference's topics. Every QoS can be overridden by REP 2003 ``qos_overrides`` parameters."""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional

from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from ..node.camera_state import CameraState
from ..node.reference import REFERENCE_TOPICS, ReferenceRefused
from ..node.settings import NodeSettings
from ..stamps import stamp_ns
from .image_subscription import ImageSubscription, sensor_qos
from .output_messages import OUTPUTS, output_messages


def _overrides() -> Dict[str, Any]:
    return dict(qos_overriding_options=QoSOverridingOptions.with_default_policies())


class CameraTopics:
    """The publishers and subscriptions of ``camera`` on ``node``."""

    def __init__(self, node: Any, camera: CameraState) -> None:
        self.node, self.camera = node, camera
        self.publishers = {key: node.create_publisher(  # a new profile per publisher: REP 2003 edits it in place
            msg_type, camera.topic(topic), QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE),
            **_overrides()) for key, msg_type, topic in OUTPUTS}
        self.image: Optional[ImageSubscription] = None
        self.subscriptions: List[Any] = []

    def subscribe(self, settings: NodeSettings, on_image: Callable[[Any], None],
                  reject: Callable[[CameraState, str, str, str], None]) -> None:
        """Subscribe as ``settings`` say: ``on_image(msg)`` for each frame, a broken reference message is
        ``reject(camera, kind, message, reason)``ed."""
        camera, node = self.camera, self.node
        compressed = settings.input_transport == "compressed"
        self.image = ImageSubscription(node, camera.topic("image/compressed" if compressed else "image"), compressed,
                                       settings.image_reliability, on_image, camera.delivery.seen)
        wanted = [(CameraInfo, "camera_info", lambda msg: camera.saw_info(msg, time.monotonic()))]
        if settings.scale_reference:
            wanted.append((PointCloud2 if settings.scale_reference == "points" else Image,
                           REFERENCE_TOPICS[settings.scale_reference], lambda msg: self._add_reference(msg, reject)))
        if settings.scale_reference == "depth":
            wanted.append((CameraInfo, "scale_reference/camera_info", lambda msg: camera.reference.add_info(msg)))
        self.subscriptions = [node.create_subscription(msg_type, camera.topic(topic), callback, sensor_qos(),
                                                       **_overrides()) for msg_type, topic, callback in wanted]

    def _add_reference(self, msg: Any, reject: Callable[[CameraState, str, str, str], None]) -> None:
        try:
            self.camera.reference.add(msg)
        except ReferenceRefused as refused:
            reject(self.camera, "scale_reference", str(refused), refused.reason)

    def unsubscribe(self) -> None:
        if self.image is not None:
            self.image.destroy()
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.image, self.subscriptions = None, []

    def destroy(self) -> None:
        self.unsubscribe()
        for pub in self.publishers.values():
            self.node.destroy_publisher(pub)
        self.publishers = {}

    def listeners(self) -> Dict[str, int]:
        """Output key -> subscriber count."""
        return {key: pub.get_subscription_count() for key, pub in self.publishers.items()}

    def publish(self, header: Any, intake: Any, result: Any, settings: NodeSettings,
                scan_time: float) -> Dict[str, float]:
        """Publish a frame's outputs; returns each one's latency since the image's stamp (ms)."""
        latencies = {}
        for key, msg in output_messages(result, header, intake.info, settings, scan_time).items():
            self.publishers[key].publish(msg)
            latencies[key] = (self.node.get_clock().now().nanoseconds - stamp_ns(header.stamp)) / 1e6
        return latencies

    def values(self) -> Dict[str, str]:
        """Diagnostics: the image subscription's reliability and publishers, each output's subscriber count."""
        values = self.image.values() if self.image is not None else {"image_reliability": "n/a"}
        return {**values, **{f"subscribers.{k}": str(n) for k, n in self.listeners().items()}}

    def follow(self) -> Optional[str]:
        """image_reliability auto: the image subscription follows its publishers; what changed, for the log."""
        switched = self.image.follow() if self.image is not None else None
        if not switched:
            return None
        return (f"image subscription {self.image.topic} is now {switched}: " + (
            "every publisher is reliable, so lost fragments are sent again" if switched == "reliable"
            else "a best-effort publisher is on the topic"))

    def topic_names(self) -> List[str]:
        return [f"{self.image.topic} ({self.image.reliability})"] + [s.topic_name for s in self.subscriptions]
