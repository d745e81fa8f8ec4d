"""How the model runs: the shared frame pipeline and the backends behind :class:`space_clip_ros.DepthEstimator`."""

from .backends import (
    BACKENDS,
    Backend,
    BackendUnavailableError,
    CompileBackend,
    CudaGraphBackend,
    EagerBackend,
    StaticShapeBackend,
    choose_backend,
    create_backend,
)
from .pipeline import to_output, to_pixel_values

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "CompileBackend",
    "CudaGraphBackend",
    "EagerBackend",
    "StaticShapeBackend",
    "choose_backend",
    "create_backend",
    "to_output",
    "to_pixel_values",
]
