"""One camera's image subscription and the reliability it follows (``image_reliability``).

``auto``: reliable while every publisher of the topic is reliable, or while none is known yet (drivers and
image_transport publish reliably by default), so DDS sends lost fragments of large frames again; best effort as soon
as a best-effort publisher is on the topic (a reliable subscription would not match it). A switch keeps the
previous subscription until the new one has matched every publisher (or RETIRE_S), and frames that arrive through
both are passed on once, so nothing is lost in the switch. ``reliable`` / ``best_effort``: fixed, with the REP 2003
``qos_overrides`` parameters.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image

from ..stamps import stamp_ns

#: When the subscription switches reliability, the old one is destroyed once the new one matched, or after this.
RETIRE_S = 5.0


def sensor_qos() -> QoSProfile:
    """rclpy's sensor-data profile, as a new object per subscription: REP 2003 overrides (qos_overrides.*) are
    applied to the profile in place, so a shared one would carry one topic's override to every other."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def publishers_reliability(infos: List[Any]) -> str:
    """best_effort when one of the topic's publishers (``get_publishers_info_by_topic``) is best effort, else
    reliable (also with no publisher known yet: the ROS default)."""
    if any(i.qos_profile.reliability != ReliabilityPolicy.RELIABLE for i in infos):
        return "best_effort"
    return "reliable"


class ImageSubscription:
    """The image subscription of one camera of ``node``: ``relative`` topic (``image`` or ``image/compressed``),
    ``callback(msg)`` for each frame, ``seen(stamp_ns)`` to tell a frame already passed on while switching."""

    def __init__(self, node: Any, relative: str, compressed: bool, setting: str,
                 callback: Callable[[Any], None], seen: Callable[[int], bool]) -> None:
        self.node = node
        self.relative = relative
        self.msg_type = CompressedImage if compressed else Image
        self.setting = setting
        self._callback, self._seen = callback, seen
        self.sub: Optional[Any] = None
        self.retiring: Optional[Tuple[Any, float]] = None
        self.reliability = ""
        self.topic = node.resolve_topic_name(relative)
        overridden = f"qos_overrides.{self.topic}.subscription.reliability" in getattr(node, "_parameter_overrides",
                                                                                        {})
        self.auto = setting == "auto" and not overridden  # follows the publishers
        wanted = setting if setting != "auto" else publishers_reliability(node.get_publishers_info_by_topic(self.topic))
        self._subscribe(wanted)

    def _on_msg(self, msg: Any) -> None:
        if self.retiring is not None and self._seen(stamp_ns(msg.header.stamp)):
            return  # the same frame through both subscriptions while switching
        self._callback(msg)

    def _subscribe(self, reliability: str) -> None:
        if self.sub is not None:  # a switch: the old one keeps delivering until the new one has matched
            self._retire()
            self.retiring = (self.sub, time.monotonic() + RETIRE_S)
        qos = sensor_qos()
        qos.reliability = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
        # Under auto the node sets the reliability itself, so it is left out of the REP 2003 parameters (a declared
        # parameter would pin the first value); history and depth stay overridable.
        options = (QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH))
                   if self.auto else QoSOverridingOptions.with_default_policies())
        self.sub = self.node.create_subscription(self.msg_type, self.relative, self._on_msg, qos,
                                                 qos_overriding_options=options)
        self.reliability = ("reliable" if self.sub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
                            else "best_effort")

    def _retire(self) -> None:
        if self.retiring is not None:
            self.node.destroy_subscription(self.retiring[0])
            self.retiring = None

    def follow(self) -> Optional[str]:
        """Switch when the publishers call for the other reliability (auto only); retire the old subscription once
        the new one matched. Returns the new reliability after a switch, else None."""
        if self.sub is None:
            return None
        publishers = self.node.get_publishers_info_by_topic(self.topic)
        if self.retiring is not None and (time.monotonic() > self.retiring[1]
                                          or self.sub.get_publisher_count() >= len(publishers)):
            self._retire()
        if not self.auto:
            return None
        wanted = publishers_reliability(publishers)
        if wanted == self.reliability:
            return None
        self._subscribe(wanted)
        return wanted

    def values(self) -> Dict[str, str]:
        """Diagnostics: the reliability in use and how many publishers the subscription has matched."""
        matched = self.sub.get_publisher_count() if self.sub is not None else 0
        return {"image_reliability": self.reliability or "n/a", "image_publishers": str(matched)}

    def destroy(self) -> None:
        self._retire()
        if self.sub is not None:
            self.node.destroy_subscription(self.sub)
            self.sub = None
