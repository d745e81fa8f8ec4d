"""The contract every backend keeps (:class:`Backend`) and the optional runtimes they may need.

A backend runs a model on frames: :meth:`Backend.forward` is the model alone (pixel values in, depth out);
:meth:`Backend.infer` is the whole frame path of frames of one size (preprocessing, model, output size, focal
scale), which a backend may run its own way (captured as CUDA graphs, say). Every backend gives ``eager``'s numbers up
to its precision; the tests hold them to it.
"""

from __future__ import annotations

import abc
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..device import precision_name
from ..model import SpaceClip
from .processing import Size, to_output, to_pixel_values

LOG = logging.getLogger("space_clip_ros.inference")

#: backend -> (Python module it needs, the extra that installs it)
OPTIONAL_MODULES = {"openvino": ("openvino", "openvino"), "onnxruntime": ("onnxruntime", "onnx")}


class BackendUnavailableError(ValueError):
    """The asked-for backend cannot run here; the message says what to install or choose instead."""


def require_module(backend: str) -> Any:
    """Import the optional runtime ``backend`` needs, or raise :class:`BackendUnavailableError` naming the extra."""
    module, extra = OPTIONAL_MODULES[backend]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendUnavailableError(
            f"backend {backend!r} needs the Python package {module!r}, which is not installed: "
            f"pip install 'space_clip_ros[{extra}]' (or: pip install {module}); or choose backend 'auto' or 'eager'"
        ) from error


def module_available(backend: str) -> bool:
    return importlib.util.find_spec(OPTIONAL_MODULES[backend][0]) is not None


class Backend(abc.ABC):
    """Runs a model on (batches of) frames. Subclasses implement :meth:`forward`; some also :meth:`infer`."""

    name = "backend"
    #: False for backends that run their own copy of the model (ONNX runtimes): the torch weights can be released.
    needs_torch_weights = True

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        self.device = device
        self.dtype = dtype
        #: dtype of the pixel values :meth:`forward` takes.
        self.input_dtype = dtype
        self.model = model
        prep = model.preprocessing
        self.input_size: Size = (int(prep.input_size[0]), int(prep.input_size[1]))
        #: The training size frames pass through on their way to the tower (see inference/processing.py).
        self.via: Size = (int(prep.output_size[0]), int(prep.output_size[1]))
        self.mean = torch.tensor(prep.mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(prep.std, device=device).view(1, 3, 1, 1)

    def describe(self) -> str:
        return f"{self.name} on {self.device} ({precision_name(self.dtype)})"

    # ------------------------------------------------------------------ the model alone
    @abc.abstractmethod
    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, S, S) pixel values (``input_dtype``, on ``device``) -> (B, 1, S, S) float32 depth on ``device``."""

    def warmup(self, batch: int = 1) -> None:
        """Run the model once, so that compilation and allocation happen now rather than on the first frame."""
        side = self.input_size
        with torch.inference_mode():
            self.forward(torch.zeros(batch, 3, *side, device=self.device, dtype=self.input_dtype))

    # ------------------------------------------------------------------ frames of one size
    def pixel_values(self, frames: Tensor) -> Tensor:
        return to_pixel_values(frames.to(self.device, non_blocking=True), self.input_size, self.mean, self.std,
                               self.input_dtype, self.via)

    def infer(self, frames: Sequence[np.ndarray], output_size: Size, scales: Optional[Sequence[float]]) -> Tensor:
        """Frames of one size (HxWx3 uint8) -> (B, H', W') float32 metres on ``device`` at ``output_size``, times
        ``scales`` when given."""
        batch = torch.from_numpy(np.stack(frames))
        depth = self.forward(self.pixel_values(batch))
        scale = None if scales is None else torch.tensor(scales, dtype=torch.float32, device=self.device)
        return to_output(depth, output_size, scale)


def user_cache_folder(name: str) -> Path:
    """``$XDG_CACHE_HOME`` (or ``~/.cache``) ``/space_clip_ros/<name>``: where the package keeps what it makes once
    per machine (ONNX exports, compiled code)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "space_clip_ros" / name


def openvino_has_bf16() -> bool:
    """Whether OpenVINO can run bf16 on this processor (AVX512-BF16 or AMX)."""
    try:
        import openvino

        return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no openvino, or a runtime that cannot tell: not usable for bf16
        return False
