"""The package's Python logging (backend choice, background compilation, ONNX cache) in the node's ROS log.

The inference code logs with :mod:`logging` so that it runs without ROS; inside the node those lines belong in
``/rosout`` and the console with the node's name, as every other line the node writes.
"""

from __future__ import annotations

import logging
from typing import Any


class RosLogHandler(logging.Handler):
    """Forwards records of the ``space_clip_ros`` loggers at INFO and above to an rclpy logger (from any thread: the
    background compiler logs from its worker)."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            # One call per severity, each on its own line: rclpy refuses a severity change at one call site.
            if record.levelno >= logging.ERROR:
                self.ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self.ros_logger.warning(text)
            else:
                self.ros_logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never break the node (a shut-down context, say)
            self.handleError(record)


def bridge_package_logs(ros_logger: Any, package: str = "space_clip_ros") -> RosLogHandler:
    """Attach a :class:`RosLogHandler` to the package's logger (INFO); returns it, for :func:`unbridge`."""
    logger = logging.getLogger(package)
    handler = RosLogHandler(ros_logger)
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def unbridge(handler: RosLogHandler, package: str = "space_clip_ros") -> None:
    logging.getLogger(package).removeHandler(handler)
