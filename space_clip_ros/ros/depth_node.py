"""depth_node: camera images in; REP 118 depth, scaled camera_info, clouds, a LaserScan, colour and confidence out.

The ROS side only: lifecycle, parameters and each camera's topics (:mod:`.camera_topics`); the work is ROS-free in
:mod:`space_clip_ros.node` (settings, camera state, intake, the frame pipeline, the inference thread, diagnostics).
Topics, parameters, QoS and lifecycle: docs/node.md. With ``cameras: [front, left]`` every topic is per camera and
the latest frame of each goes through one batched forward; a newer frame replaces a waiting one (counted as dropped).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, State, TransitionCallbackReturn

from ..device import release_memory
from ..node.camera_state import CameraState
from ..node.diagnostics import camera_status, model_line, model_values
from ..node.frame_pipeline import FramePipeline
from ..node.settings import PARAMETERS, SPECS, NodeSettings, apply_changes
from ..node.worker import FrameWorker, ThrottledLog
from ..stamps import stamp_ns
from . import fastdds
from .camera_topics import CameraTopics
from .descriptors import declare_all
from .log_bridge import bridge_package_logs, unbridge
from .messages import diagnostic_array
from .rclpy_compat import guard_change_state, init_without_signal_handlers, spin_until, stop_on_signals
from .tf_listener import TfSubscription

#: How often each image subscription checks its publishers' reliability (image_reliability auto).
FOLLOW_PERIOD_S = 0.5


class DepthNode(LifecycleNode):
    """Lifecycle node: configure loads the model and creates the publishers (and fails cleanly), activate
    subscribes and starts the inference thread."""

    def __init__(self, node_name: str = "depth_node", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        guard_change_state(self)
        self._log_bridge = bridge_package_logs(self.get_logger())
        self._refused_at_start = declare_all(self, SPECS)  # values their descriptor refused: configure fails
        self.estimator, self.pipeline, self.settings = None, None, None  # settings: replaced whole on a change
        self.cameras: List[CameraState] = []
        self._topics: Dict[str, CameraTopics] = {}  # camera name -> its publishers and subscriptions
        self._tf = TfSubscription(self)
        self._log = ThrottledLog(self.get_logger())
        self._worker = FrameWorker(self._log, lambda camera: self._topics[camera.name])
        self._status = "unconfigured"
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        period = float(self.get_parameter("diagnostics_period").value)
        self._diag_timer = self.create_timer(period if period > 0 else 1.0, self._publish_diagnostics)
        self._follow_timer = self.create_timer(FOLLOW_PERIOD_S, self._follow_publishers)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        if self.get_parameter("autostart").value and self.trigger_configure() == TransitionCallbackReturn.SUCCESS:
            self.trigger_activate()

    def _values(self) -> Dict[str, Any]:
        values = {name: self.get_parameter(name).value for name in PARAMETERS}
        return {**values, "cameras": values["cameras"] or []}

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        try:
            if self._refused_at_start:
                raise ValueError("; ".join(self._refused_at_start))
            self.settings = settings = NodeSettings.from_values(self._values())
            if settings.untrained_demo:
                self.get_logger().warn("UNTRAINED demo model (random weights, explicitly requested with "
                                       "untrained_demo:=true): its depth is meaningless")
            self.pipeline = FramePipeline.from_settings(settings)
            self.estimator = self.pipeline.estimator
            release_memory()  # what loading the checkpoint left behind
            self.cameras = [CameraState(name, settings.camera_info_cache) for name in (settings.cameras or [""])]
            self._topics = {camera.name: CameraTopics(self, camera) for camera in self.cameras}
        except Exception as error:  # a bad checkpoint, device or qos_overrides.* value: unconfigured, reason logged
            self.on_cleanup(state)
            self._status = f"configure failed: {error}"
            self.get_logger().error(f"configure failed: {error}")
            return TransitionCallbackReturn.FAILURE
        self._status = "configured"
        self.get_logger().info(model_line(self.estimator, settings))
        return TransitionCallbackReturn.SUCCESS

    def _on_set_parameters(self, params) -> SetParametersResult:
        """Runtime changes: refused with the reason when invalid or when they need a reload / re-subscription (the
        node keeps its working values); applied at the next frame otherwise."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        updated, reason = apply_changes(self.settings, self._values(), changes, self._worker.running)
        if updated is None:
            return SetParametersResult(successful=reason is None, reason=reason or "")
        for camera in self.cameras:
            camera.resize_cache(updated.camera_info_cache)
        self.settings = updated
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changes.items()))
        return SetParametersResult(successful=True)

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        for camera in self.cameras:
            camera.order.forget()  # a new activation: no ordering against frames of before
            camera.refine(self.settings)
            self._topics[camera.name].subscribe(self.settings, lambda msg, c=camera: self._on_image(c, msg),
                                                self._log.reject)
        tree = self._tf.start() if self.settings.uses_tf else self._tf.tree
        self._worker.start(self.cameras, self.pipeline, lambda: self.settings, tree)
        self._status = "active"
        names = [name for topics in self._topics.values() for name in topics.topic_names()]
        self.get_logger().info(f"active: subscribed to {', '.join(names)}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._worker.stop(self.cameras)
        for topics in self._topics.values():
            topics.unsubscribe()
        self._tf.stop()
        self._status = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        for topics in self._topics.values():
            topics.destroy()
        self._topics, self.cameras, self.estimator, self.pipeline, self.settings = {}, [], None, None, None
        self._status = "unconfigured"
        release_memory()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._worker.stop()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self) -> None:
        unbridge(self._log_bridge)
        super().destroy_node()

    # ------------------------------------------------------------------ callbacks
    def _listeners(self, camera: CameraState) -> Dict[str, int]:
        topics = self._topics.get(camera.name)
        return topics.listeners() if topics is not None else {}

    def _on_image(self, camera: CameraState, msg: Any) -> None:
        camera.stats.frame_in(time.monotonic())
        camera.delivery.saw_image(stamp_ns(msg.header.stamp))
        if not any(self._listeners(camera).values()):
            camera.stats.count("idle_no_subscribers")
            return
        self._worker.put(camera, msg)

    def _follow_publishers(self) -> None:
        """image_reliability auto: each image subscription follows its publishers (see :mod:`.image_subscription`)."""
        for topics in list(self._topics.values()):
            switched = topics.follow()
            if switched:
                self.get_logger().info(switched)

    def _publish_diagnostics(self) -> None:
        """One status per camera (``<node>: depth``, or ``<node>: depth <camera>``); before configure one status."""
        now, statuses = time.monotonic(), []
        model = model_values(self.estimator, self.get_parameter("precision").value, self.pipeline)
        for camera in self.cameras or [CameraState("", 1)]:
            topics = self._topics.get(camera.name)
            values = topics.values() if topics is not None else {"image_reliability": "n/a"}
            if self.settings is not None and self.settings.uses_tf:
                values["tf"] = self._tf.value()
            statuses.append(camera_status(self.get_fully_qualified_name(), self._status, self.estimator, camera, now,
                                          model, values))
        self._diag_pub.publish(diagnostic_array(statuses, self.get_clock().now().to_msg()))


def main(args=None) -> None:
    """Console script ``depth_node``: ``depth_node --ros-args -p checkpoint:=PATH -p device:=cpu -r __ns:=/camera``."""
    fastdds.use_shipped_profile()
    init_without_signal_handlers(args)
    stop = stop_on_signals()  # before the node: configure and activate run in its constructor (autostart)
    node = DepthNode()
    spin_until(node, stop, node._worker.stop)


if __name__ == "__main__":
    main()
