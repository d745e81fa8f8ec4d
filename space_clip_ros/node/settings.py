"""The depth node's parameters: their defaults, one validation, and which ones may change while it runs.

Plain Python (no rclpy): the node reads its parameters once in ``on_configure`` into a :class:`NodeSettings` and
swaps in a new one when a runtime change is valid; the inference worker reads the current object once per frame.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Tuple

from ..colormaps import COLORMAPS
from ..device import INFERENCE_PRECISIONS, check_device_spec
from ..inference import BACKENDS
from ..temporal import MAX_FRAMES_LIMIT

#: scale_reference values: none, a PointCloud2 (lidar, ToF) or a depth Image with its camera_info (RGB-D).
SCALE_REFERENCES = ("", "points", "depth")
TEMPORAL_FILTERS = ("off", "odom")
INPUT_TRANSPORTS = ("raw", "compressed")
#: image_reliability values: auto follows the camera's publishers (reliable when all of them are, so large frames
#: lost on the way are sent again; best effort otherwise, which matches every publisher).
IMAGE_RELIABILITY = ("auto", "reliable", "best_effort")
#: When a change of a parameter takes effect (ParameterSpec.change), as the node says it.
CHANGES = {
    "runtime": "changes at run time, from the next frame",
    "reload": "needs the model loaded again: deactivate, cleanup, set it, configure, activate",
    "topics": "changes the topics: deactivate, cleanup, set it, configure, activate",
    "resubscribe": "changes the subscriptions: deactivate, set it, activate",
    "startup": "read once at start (parameter file or -p)",
}
INF = float("inf")
INT_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of the node: its default (whose type is the parameter's), one line of meaning, its range
    (numbers, inclusive) or choices (strings), and when a change takes effect (a key of :data:`CHANGES`). The one
    place a parameter is written: NodeSettings, the declared ROS parameters (with ParameterDescriptors), the
    launch file's arguments and the parameter tables of config/depth.yaml and docs/node.md follow it (tests)."""

    name: str
    default: Any
    description: str
    low: Optional[float] = None
    high: Optional[float] = None
    choices: Tuple[str, ...] = ()
    change: str = "runtime"


_spec = ParameterSpec  # the table below, in lines that fit


SPECS: Tuple[ParameterSpec, ...] = (
    _spec("checkpoint", "", "space_clip_ros checkpoint (.pt); required unless untrained_demo is true",
          change="reload"),
    _spec("backbone", "", "hub id or local folder overriding the checkpoint's CLIP tower (offline robots)",
          change="reload"),
    _spec("untrained_demo", False, "run a small UNTRAINED model (random weights, meaningless depth): demos only",
          change="reload"),
    _spec("device", "auto", "auto (CUDA when available) | cpu | cuda | cuda:N", change="reload"),
    _spec("precision", "auto", "auto (fp16 on CUDA, fp32 on the CPU) | fp32 | fp16 (CUDA) | bf16",
          choices=INFERENCE_PRECISIONS, change="reload"),
    _spec("backend", "auto", "inference backend: auto picks the fastest for the device (docs/performance.md)",
          choices=BACKENDS, change="reload"),
    _spec("output_size", "input", "input (the camera's resolution) | model (the checkpoint's) | WIDTHxHEIGHT"),
    _spec("min_depth", 0.1, "metres; depth outside [min_depth, max_depth] is published as NaN", 0.0, INF),
    _spec("max_depth", 80.0, "metres; the upper end of the published depth", 0.0, INF),
    _spec("focal_scale_transfer", True, "rescale metric depth from the training camera to this one by camera_info fx"),
    _spec("publish_points", True, "depth/points (organized PointCloud2, built only while someone subscribes)"),
    _spec("points_stride", 1, "keep every Nth row and column of depth/points", 1, INT_MAX),
    _spec("points_rgb", False, "add a packed rgb field to depth/points (point_step 32)"),
    _spec("publish_colored", True, "depth/colored (rgb8, for people)"),
    _spec("colormap", "turbo", "colour map of depth/colored", choices=COLORMAPS),
    _spec("colored_min_depth", 1.0, "metres at the warm end of depth/colored", 0.0, INF),
    _spec("colored_max_depth", 50.0, "metres at the cold end of depth/colored", 0.0, INF),
    _spec("scan_height", 1, "depth/scan (LaserScan as depthimage_to_laserscan): rows around cy", 1, INT_MAX),
    _spec("scan_range_min", 0.3, "metres; the closest range within [scan_range_min, scan_range_max] per angle",
          0.0, INF),
    _spec("scan_range_max", 20.0, "metres; depth beyond max_depth gives +Inf (REP 117: clears costmaps)", 0.0, INF),
    _spec("scan_frame", "", "LaserScan frame; empty: the depth frame without _optical_frame / _optical (REP 103)"),
    _spec("points_filtered_min_range", 0.3, "depth/points_filtered: nearest point kept, metres from the camera",
          0.0, INF),
    _spec("points_filtered_max_range", 10.0, "depth/points_filtered: farthest point kept, metres from the camera",
          0.0, INF),
    _spec("points_filtered_edge_threshold", 0.1,
          "drop a pixel whose depth jumps from a 4-neighbour by more than this times its depth; 0 keeps them",
          0.0, INF),
    _spec("points_filtered_voxel", 0.05, "voxel grid leaf, metres (a centroid per voxel); 0 keeps every point",
          0.0, INF),
    _spec("points_filtered_stride", 1, "keep every Nth row and column before the voxel grid", 1, INT_MAX),
    _spec("points_filtered_min_confidence", 0.0, "drop pixels whose depth/confidence is below this (0 keeps all)",
          0.0, 1.0),
    _spec("scan_min_confidence", 0.0, "depth/scan ignores pixels whose depth/confidence is below this", 0.0, 1.0),
    _spec("scale_reference", "", "align the depth's scale: '' off | points (PointCloud2 on scale_reference/points) "
          "| depth (Image on scale_reference/depth + scale_reference/camera_info)", choices=SCALE_REFERENCES,
          change="resubscribe"),
    _spec("scale_max_dt", 0.1, "seconds between an image and the reference message paired with it", 0.0, INF),
    _spec("scale_time_constant", 2.0, "seconds of the scale's filter over time (0: each frame's own fit)", 0.0, INF),
    _spec("scale_hold_s", 5.0, "seconds the last scale is kept after the reference stops", 0.0, INF),
    _spec("scale_holdout", 0.2, "share of reference pixels kept out of the fit to measure accuracy", 0.0, 0.99),
    _spec("scale_min_points", 50, "fewer reference pixels in view: no fit this frame", 1, INT_MAX),
    _spec("temporal_filter", "off", "off | odom: fuse with the previous depth moved by the camera's motion (tf)",
          choices=TEMPORAL_FILTERS, change="resubscribe"),
    _spec("temporal_gate", 0.15, "largest relative inverse-depth difference that counts as agreement", 1e-6, INF),
    _spec("temporal_max_frames", 8, "the most frames one pixel averages", 1, MAX_FRAMES_LIMIT),
    _spec("odom_frame", "odom", "fixed frame of the camera's motion (fusion, references of a moving robot)"),
    _spec("input_transport", "raw", "raw (image) | compressed (image/compressed, jpeg/png)",
          choices=INPUT_TRANSPORTS, change="resubscribe"),
    _spec("image_reliability", "auto", "auto: reliable when every publisher of the image is, else best effort",
          choices=IMAGE_RELIABILITY, change="resubscribe"),
    _spec("camera_info_cache", 30, "camera_info messages kept to pair with images by stamp", 1, INT_MAX),
    _spec("diagnostics_period", 1.0, "seconds between /diagnostics messages", 1e-3, INF, change="startup"),
    _spec("autostart", True, "configure and activate at start, without a lifecycle manager", change="startup"),
    _spec("cameras", [], "[] one camera; [front, left]: front/image -> front/depth/image ..., one batched model",
          change="topics"),
)

#: Every parameter with its default (from :data:`SPECS`).
PARAMETERS: Dict[str, Any] = {spec.name: spec.default for spec in SPECS}
SPEC_BY_NAME: Dict[str, ParameterSpec] = {spec.name: spec for spec in SPECS}


def _changing(kind: str) -> frozenset:
    return frozenset(spec.name for spec in SPECS if spec.change == kind)


#: Changing these means loading the model again: refused while the node is configured.
RELOAD_PARAMETERS = _changing("reload")
#: Changing these changes the node's topics: refused while the node is configured.
TOPIC_PARAMETERS = _changing("topics")
#: Changing these means subscribing again: refused while the node is active.
RESUBSCRIBE_PARAMETERS = _changing("resubscribe")
#: Read once when the node starts.
STARTUP_PARAMETERS = _changing("startup")


CAMERA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*")


def check_spec(spec: ParameterSpec, value: Any) -> None:
    """``ValueError`` unless ``value`` lies in ``spec``'s range (inclusive; NaN never does) or is one of its choices
    (as written there); the message names the parameter and its meaning."""
    if spec.choices and value not in spec.choices:
        raise ValueError(f"{spec.name} must be one of {list(spec.choices)} ({spec.description}), got {value!r}")
    if spec.low is not None and not spec.low <= value <= spec.high:
        bound = f">= {spec.low:g}" if spec.high in (INF, INT_MAX) else f"within {spec.low:g}..{spec.high:g}"
        raise ValueError(f"{spec.name} must be {bound} ({spec.description}), got {value}")


def parse_output_size(value: str) -> Optional[Tuple[int, int]]:
    """``input`` / ``model`` -> None; ``WIDTHxHEIGHT`` -> (height, width); anything else raises ``ValueError``."""
    text = str(value).strip().lower()
    if text in ("input", "model"):
        return None
    match = re.fullmatch(r"(\d+)x(\d+)", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise ValueError(f"output_size must be 'input', 'model' or 'WIDTHxHEIGHT', got {value!r}")
    return int(match.group(2)), int(match.group(1))


@dataclass(frozen=True)
class NodeSettings:
    """Validated parameter values (see :data:`PARAMETERS` and config/depth.yaml for their meaning)."""

    checkpoint: str
    backbone: str
    untrained_demo: bool
    device: str
    precision: str
    backend: str
    output_size: str
    min_depth: float
    max_depth: float
    focal_scale_transfer: bool
    publish_points: bool
    points_stride: int
    points_rgb: bool
    publish_colored: bool
    colormap: str
    colored_min_depth: float
    colored_max_depth: float
    scan_height: int
    scan_range_min: float
    scan_range_max: float
    scan_frame: str
    points_filtered_min_range: float
    points_filtered_max_range: float
    points_filtered_edge_threshold: float
    points_filtered_voxel: float
    points_filtered_stride: int
    points_filtered_min_confidence: float
    scan_min_confidence: float
    scale_reference: str
    scale_max_dt: float
    scale_time_constant: float
    scale_hold_s: float
    scale_holdout: float
    scale_min_points: int
    temporal_filter: str
    temporal_gate: float
    temporal_max_frames: int
    odom_frame: str
    input_transport: str
    image_reliability: str
    camera_info_cache: int
    diagnostics_period: float
    autostart: bool
    cameras: Tuple[str, ...] = ()

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "NodeSettings":
        """Settings from parameter values (missing ones take their defaults); ``ValueError`` names what is wrong."""
        unknown = sorted(set(values) - set(PARAMETERS))
        if unknown:
            raise ValueError(f"unknown parameters {unknown}")
        merged = {**PARAMETERS, **values}
        cameras = merged["cameras"]
        if cameras is None:
            cameras = ()
        if isinstance(cameras, str):  # "front,left" (and "" for none), as a launch argument may give it
            cameras = [c.strip() for c in cameras.split(",") if c.strip()]
        if not all(isinstance(c, str) for c in cameras):
            raise ValueError(f"cameras must be a list of camera names, got {cameras!r}")
        merged["cameras"] = tuple(cameras)
        settings = cls(**merged)
        settings.validate()
        return settings

    def alignment(self) -> Dict[str, Any]:
        """The values of a camera's :class:`~space_clip_ros.alignment.ScaleAligner` (its constructor's names)."""
        return dict(holdout=self.scale_holdout, min_points=self.scale_min_points,
                    time_constant_s=self.scale_time_constant, hold_s=self.scale_hold_s, min_depth=self.min_depth,
                    max_depth=self.max_depth)

    def fusion(self) -> Dict[str, Any]:
        """The values of a camera's :class:`~space_clip_ros.temporal.TemporalFusion` (its constructor's names)."""
        return dict(gate=self.temporal_gate, max_frames=self.temporal_max_frames)

    def replace(self, **changes: Any) -> "NodeSettings":
        return NodeSettings.from_values({**dataclasses.asdict(self), **changes})

    def validate(self) -> None:
        """Every parameter within its range or choices (:data:`SPECS`), then the rules that join parameters;
        ``ValueError`` says which value is wrong and what it means."""
        for low, high in (("min_depth", "max_depth"), ("colored_min_depth", "colored_max_depth"),
                          ("scan_range_min", "scan_range_max"),
                          ("points_filtered_min_range", "points_filtered_max_range")):
            if not 0 <= getattr(self, low) < getattr(self, high):
                raise ValueError(f"need 0 <= {low} < {high}, got {getattr(self, low)} and {getattr(self, high)}")
        for spec in SPECS:
            check_spec(spec, getattr(self, spec.name))
        parse_output_size(self.output_size)
        for name in ("scan_frame", "odom_frame"):
            frame = getattr(self, name)
            if frame.startswith("/") or frame != frame.strip():
                raise ValueError(f"{name} must be a tf2 frame id without a leading '/' or spaces, got {frame!r}")
        if self.temporal_filter == "odom" and not self.odom_frame:
            raise ValueError("temporal_filter odom needs odom_frame (the fixed frame of the robot's odometry)")
        check_device_spec(self.device)
        for name in self.cameras:
            if not CAMERA_NAME.fullmatch(name):
                raise ValueError(f"camera name {name!r} is not a relative ROS name (letters, digits, '_', '/' "
                                 "between parts, starting with a letter), e.g. 'front' or 'stereo/left'")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera names must be unique, got {list(self.cameras)}")

    @property
    def uses_tf(self) -> bool:
        """Whether the node needs /tf and /tf_static (a scale reference, or temporal fusion)."""
        return bool(self.scale_reference) or self.temporal_filter != "off"

    @property
    def fixed_output_size(self) -> Optional[Tuple[int, int]]:
        """(height, width) when ``output_size`` is WIDTHxHEIGHT, else None."""
        return parse_output_size(self.output_size)


def runtime_change_refusal(name: str, configured: bool, active: bool) -> Optional[str]:
    """Why parameter ``name`` cannot change now, or None when it can."""
    if name in STARTUP_PARAMETERS:
        return f"{name} is read once at start: set it in the parameter file or with -p when starting the node"
    if configured and name in RELOAD_PARAMETERS:
        return (f"{name} needs the model loaded again: deactivate and clean up the node, set {name}, then "
                "configure and activate it (ros2 lifecycle set <node> deactivate / cleanup / configure / activate)")
    if configured and name in TOPIC_PARAMETERS:
        return (f"{name} changes the node's topics: deactivate and clean up the node, set {name}, then configure "
                "and activate it (ros2 lifecycle set <node> deactivate / cleanup / configure / activate)")
    if active and name in RESUBSCRIBE_PARAMETERS:
        return (f"{name} changes the subscriptions: deactivate the node, set {name}, then activate it "
                "(ros2 lifecycle set <node> deactivate / activate)")
    return None


def apply_changes(current: Optional[NodeSettings], values: Mapping[str, Any], changes: Mapping[str, Any],
                  active: bool) -> Tuple[Optional[NodeSettings], Optional[str]]:
    """A runtime parameter change: (the new settings, None) when it can be applied now; (None, None) when the node
    is unconfigured and the values are valid (read at configure); (None, reason) when refused (invalid, or needing a
    reload / re-subscription). ``values``: every parameter's current value; ``changes``: the ones being set."""
    changes = {k: ([] if k == "cameras" and v is None else v) for k, v in changes.items()}
    for name, value in changes.items():
        unchanged = current is not None and getattr(current, name) == (tuple(value) if name == "cameras" else value)
        reason = None if unchanged else runtime_change_refusal(name, current is not None, active)
        if reason:
            return None, reason
    try:
        if current is None:
            NodeSettings.from_values({**values, **changes})
            return None, None
        return current.replace(**changes), None
    except (ValueError, TypeError) as error:
        return None, str(error)
