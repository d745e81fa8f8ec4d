"""/tf and /tf_static into a :class:`space_clip_ros.tf_tree.TfTree` (the tree space-clip-bag2dataset reads
recordings into), with tf2's QoS: /tf_static reliable and transient local (late joiners get every static
transform), /tf reliable, depth 100. Dynamic samples older than ``cache_s`` behind an edge's newest are dropped.

Without the tf2_msgs package (a pip install without the ROS tf2_msgs wheel), :func:`subscribe_tf` returns the
reason; the node logs it and reports it in /diagnostics (``tf``), and only frames that need no transform work.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..tf_tree import TfTree

#: Seconds of dynamic transforms kept (tf2's buffer keeps 10 s).
TF_CACHE_S = 10.0


def subscribe_tf(node: Any, tree: TfTree) -> Tuple[List[Any], str]:
    """(the subscriptions, "") or ([], why there is no tf)."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError as error:
        return [], (f"tf2_msgs is not installed ({error}): on a ROS 2 install, source it (it ships tf2_msgs); "
                    "with pip, install the ROS tf2_msgs wheel into the same environment as rclpy")

    dynamic = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
    static = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                        durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return [node.create_subscription(TFMessage, "/tf", lambda msg: tree.add_transforms(msg.transforms), dynamic),
            node.create_subscription(TFMessage, "/tf_static", lambda msg: tree.add_transforms(msg.transforms, True),
                                     static)], ""


class TfSubscription:
    """The node's /tf and /tf_static while it is active: a new tree at each :meth:`start` (none before),
    ``problem`` when there is no tf to be had."""

    def __init__(self, node: Any) -> None:
        self.node, self.tree, self.problem, self._subs = node, TfTree(TF_CACHE_S), "not used", []

    def start(self) -> TfTree:
        self.tree = TfTree(TF_CACHE_S)
        self._subs, self.problem = subscribe_tf(self.node, self.tree)
        if self.problem:
            self.node.get_logger().error(f"no tf: {self.problem}; scale references in other frames and temporal "
                                         "fusion cannot work")
        return self.tree

    def stop(self) -> None:
        for sub in self._subs:
            self.node.destroy_subscription(sub)
        self._subs = []

    def value(self) -> str:
        """/diagnostics ``tf``."""
        return self.problem or f"{self.tree.received} transforms received"
