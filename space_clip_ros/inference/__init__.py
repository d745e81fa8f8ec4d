"""How the model runs: the frame pipeline (:mod:`.processing`), the backend contract (:mod:`.base`), the backends
(:mod:`.eager`, :mod:`.static`, :mod:`.runtimes`) and the choice between them (:mod:`.registry`), behind
:class:`space_clip_ros.DepthEstimator`. No module imports one that imports it back."""

from .base import Backend, BackendUnavailableError
from .eager import CompileBackend, EagerBackend
from .processing import to_output, to_pixel_values
from .registry import BACKENDS, choose_backend, create_backend
from .static import CudaGraphBackend, StaticShapeBackend

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
