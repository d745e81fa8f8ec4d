"""Message stamps (builtin_interfaces/Time, read duck-typed: no ROS needed) as integer nanoseconds, and back."""

from __future__ import annotations

from typing import Any


def stamp_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def format_ns(ns: int) -> str:
    """Integer nanoseconds as ``sec.nanosec`` (how ROS tools print a stamp)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"
