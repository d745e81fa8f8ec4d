"""PyTorch as written (``eager``: how the authors' code runs) and ``torch.compile`` of the whole model."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..model import SpaceClip
from .base import Backend


class EagerBackend(Backend):
    """The model as it is, on any device and precision: the reference every other backend is checked against."""

    name = "eager"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__(model.to(device=device, dtype=dtype).eval(), device, dtype)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self.model(pixel_values).float()


class CompileBackend(EagerBackend):
    """``torch.compile`` of the whole model (frozen tower and decoder); the same numbers as eager to float rounding.
    The first call compiles (docs/performance.md says how long it took)."""

    name = "compile"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype, mode: Optional[str] = None) -> None:
        super().__init__(model, device, dtype)
        self._compiled = torch.compile(self.model, mode=mode)

    def forward(self, pixel_values: Tensor) -> Tensor:
        return self._compiled(pixel_values).float()
