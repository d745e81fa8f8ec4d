"""The node's parameters as ROS sees them: a ParameterDescriptor per :class:`~.settings.ParameterSpec`, read by
``ros2 param describe`` (the meaning, when a change takes effect, the range of a number, the choices of a string)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from ..node.settings import CHANGES, ParameterSpec


def describe(spec: ParameterSpec) -> ParameterDescriptor:
    """The descriptor of ``spec``: description (meaning; when a change takes effect), range (inclusive, rclpy
    refuses values outside it) or choices (in ``additional_constraints``), dynamic typing for ``cameras`` (an empty
    list has no type)."""
    descriptor = ParameterDescriptor(description=f"{spec.description} [{CHANGES[spec.change]}]",
                                     dynamic_typing=isinstance(spec.default, list))
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(repr(choice) for choice in spec.choices)
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, bool):
            raise ValueError(f"parameter {spec.name}: a bool has no range")
        if isinstance(spec.default, int):
            descriptor.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        else:
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                                  to_value=float(spec.high), step=0.0)]
    return descriptor


def declare_all(node: Any, specs) -> list:
    """Declare every parameter of ``specs`` on ``node`` with its descriptor. A value given at start that the
    descriptor refuses (out of range) does not end the process: the parameter is declared with its default and
    the refusal returned, for configure to fail with it (as any other invalid value)."""
    from rclpy.exceptions import InvalidParameterValueException

    refused = []
    for spec in specs:
        descriptor = describe(spec)
        try:
            node.declare_parameter(spec.name, spec.default, descriptor)
        except InvalidParameterValueException as error:
            node.declare_parameter(spec.name, spec.default, descriptor, ignore_override=True)
            refused.append(f"{spec.name}: {error}")
    return refused
