"""A frame's outputs (:class:`~space_clip_ros.node.frame_pipeline.FrameResult`) as the messages the node
publishes, without publishers: depth/image, depth/camera_info, depth/colored, depth/points, depth/points_filtered,
depth/scan, depth/confidence."""

from __future__ import annotations

from typing import Any, Dict, Optional

from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2

from ..node.frame_pipeline import FrameResult
from ..node.settings import NodeSettings
from ..planner_outputs import scan_frame_id
from . import messages

#: key, type, relative topic of every output; all but depth and info are computed only while subscribed.
OUTPUTS = (("depth", Image, "depth/image"), ("info", CameraInfo, "depth/camera_info"),
           ("points", PointCloud2, "depth/points"), ("points_filtered", PointCloud2, "depth/points_filtered"),
           ("scan", LaserScan, "depth/scan"), ("colored", Image, "depth/colored"),
           ("confidence", Image, "depth/confidence"))


def output_messages(result: FrameResult, header: Any, info: Optional[Any], settings: NodeSettings,
                    scan_time: float = 0.0) -> Dict[str, Any]:
    """Output key -> message for every output ``result`` holds; all stamped and framed as the image (``header``),
    the scan in ``scan_frame`` (default: the image's frame without ``_optical_frame``)."""
    out_h, out_w = result.depth.shape
    out: Dict[str, Any] = {"depth": messages.depth_to_image(result.depth, header)}
    if info is not None:
        out["info"] = messages.scale_camera_info(info, out_w, out_h, header)
    if result.colored is not None:
        out["colored"] = messages.rgb_to_image(result.colored, header)
    if result.confidence is not None:  # 32FC1 as the depth (0..1, not metres), the same pixels and frame
        out["confidence"] = messages.depth_to_image(result.confidence, header)
    if result.points is not None:
        out["points"] = messages.cloud_message(result.points, header)
    if result.points_filtered is not None:
        out["points_filtered"] = messages.cloud_message(result.points_filtered, header)
    if result.scan is not None:
        out["scan"] = messages.scan_message(result.scan, result.scan_geometry, header,
                                            scan_frame_id(header.frame_id, settings.scan_frame),
                                            settings.scan_range_min, settings.scan_range_max, scan_time)
    return out
