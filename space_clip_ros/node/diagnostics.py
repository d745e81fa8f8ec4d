"""The depth node's /diagnostics content without ROS: one status per camera (name, level, message, key/values) from
the node's state, the model and the camera's statistics. The node wraps them in diagnostic_msgs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..device import precision_name

#: diagnostic_msgs/DiagnosticStatus levels.
OK, WARN, ERROR = 0, 1, 2


@dataclass
class Status:
    name: str
    level: int
    message: str
    values: Dict[str, str]


def model_values(estimator: Optional[Any], precision: str, pipeline: Optional[Any] = None) -> Dict[str, str]:
    """What every camera's status says about the model: device, precision, backend, trained or not, its programs
    and how the path after it runs (``path_graphs``: replayed programs, or eager)."""
    graphs = getattr(pipeline, "graphs", None)
    return {
        "path_graphs": graphs.state() if graphs is not None else "off (eager)",
        "device": str(estimator.device) if estimator else "",
        "precision": precision_name(estimator.dtype) if estimator else str(precision),  # auto resolved
        "backend": estimator.backend_name if estimator else "",
        "model": ("trained" if estimator.trained else "UNTRAINED") if estimator else "not loaded",
        "compile": estimator.compile_state() if estimator else "",
        "programs": (", ".join(estimator.programs()) or "n/a (dynamic shapes)") if estimator else "",
    }


def model_line(estimator: Any, settings: Any) -> str:
    """The log line of a configured node: the model, where and how it runs, the cameras."""
    cameras = f", cameras {list(settings.cameras)}" if settings.cameras else ""
    return (f"model loaded ({'trained' if estimator.trained else 'UNTRAINED'}, "
            f"{estimator.model.provenance.get('source', '?')}) on {estimator.device} in "
            f"{precision_name(estimator.dtype)} (precision {settings.precision}), backend {estimator.backend_name} "
            f"({estimator.backend_reason}){cameras}")


def camera_status(node_name: str, state: str, estimator: Optional[Any], camera: Any, now: float,
                  model: Dict[str, str], subscription: Dict[str, str]) -> Status:
    """The status of ``camera`` (a :class:`~space_clip_ros.node.camera_state.CameraState`): ``<node>: depth`` (or
    ``<node>: depth <camera>``); ERROR without a model, WARN for an untrained model or rejected inputs.
    ``subscription``: the image subscription's values (reliability, matched publishers) and the output
    subscriber counts."""
    counts = camera.stats.counts()
    if estimator is None:
        level, message = ERROR, state
    elif not estimator.trained:
        level, message = WARN, f"{state}; UNTRAINED model"
    elif counts.get("rejected", 0):
        level, message = WARN, f"{state}; rejected inputs"
    else:
        level, message = OK, state
    camera.delivery.settle(now)
    values = {"state": state, **camera.stats.values(now), **camera.delivery.values(), **subscription, **model}
    if camera.aligner is not None:  # scale alignment: the last frame's fit and accuracy on held-out pixels
        values.update(camera.last_fit.values() if camera.last_fit is not None else {"scale_state": "no frame yet"})
    if camera.fusion is not None:
        values["temporal_filter"] = camera.pose_problem or "fusing"
    if camera.name:
        values["camera"] = camera.name
    name = f"{node_name}: depth" + (f" {camera.name}" if camera.name else "")
    return Status(name, level, message, values)
