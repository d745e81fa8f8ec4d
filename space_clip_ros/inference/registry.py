"""Which backend runs: the names, the ``auto`` rule (:func:`choose_backend`) and :func:`create_backend`.

=============  ======================================================================================================
``eager``      PyTorch as written (how the authors' code runs); any device and precision.
``compile``    ``torch.compile`` of the model (CPU and CUDA); the first call compiles (docs/performance.md).
``cudagraph``  CUDA only: the whole frame path (upload, preprocessing, model, output resize, focal scale) captured
               once per (batch bucket 1/2/4/8, input size, output size) and replayed. ``compile``: "background"
               (default: each graph serves uncompiled at once and is swapped for its compiled twin when that is
               ready), True (compile before the first frame), False (never).
``openvino``   CPU: the ONNX export run by OpenVINO, fp32 or bf16 (``pip install 'space_clip_ros[openvino]'``).
``onnxruntime``  CPU: the ONNX export run by ONNX Runtime, fp32 (``pip install 'space_clip_ros[onnx]'``).
``auto``       see :func:`choose_backend`.
=============  ======================================================================================================
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Tuple

import torch

from ..model import SpaceClip
from . import base
from .base import LOG, OPTIONAL_MODULES, Backend, module_available
from .eager import CompileBackend, EagerBackend
from .static import CudaGraphBackend

BACKENDS = ("auto", "eager", "compile", "cudagraph", "openvino", "onnxruntime")


def choose_backend(device: torch.device, dtype: torch.dtype) -> Tuple[str, str]:
    """The backend ``auto`` picks for ``device`` and ``dtype``, and why (the rule in docs/performance.md)."""
    if device.type == "cuda":
        return "cudagraph", ("CUDA device: the whole frame path in CUDA graphs, the model compiled in the background "
                             "(served uncompiled until then)")
    if module_available("openvino") and (dtype != torch.bfloat16 or base.openvino_has_bf16()):
        return "openvino", "CPU with openvino installed: the fastest CPU backend measured (docs/performance.md)"
    if dtype == torch.bfloat16 and module_available("openvino"):
        return "eager", ("CPU bf16: this processor has no bf16 support in OpenVINO (no AVX512-BF16 or AMX), so "
                         "PyTorch eager runs it")
    if dtype == torch.float32 and module_available("onnxruntime"):
        return "onnxruntime", ("CPU with onnxruntime (no openvino) installed: faster than eager fp32 on the CPU "
                               "(docs/performance.md)")
    return "eager", ("CPU without openvino or onnxruntime: PyTorch eager; pip install 'space_clip_ros[openvino]' "
                     "for the faster CPU backend")


def create_backend(name: str, model: SpaceClip, device: torch.device, dtype: torch.dtype,
                   **options: Any) -> Tuple[Backend, str]:
    """Build backend ``name`` (one of :data:`BACKENDS`) for ``model``; returns it and the reason it was chosen."""
    key = (name or "auto").strip().lower()
    if key not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    reason = "asked for"
    if key == "auto":
        key, reason = choose_backend(device, dtype)
        reason = f"auto: {reason}"
    factories: Dict[str, Callable[..., Backend]] = {
        "eager": EagerBackend, "compile": CompileBackend, "cudagraph": CudaGraphBackend,
    }
    if key in OPTIONAL_MODULES:  # imported on demand: the ONNX export machinery is heavy
        from . import runtimes

        factories.update(openvino=runtimes.OpenVinoBackend, onnxruntime=runtimes.OnnxRuntimeBackend)
    backend = factories[key](model, device, dtype, **options)
    LOG.info("backend %s (%s)", backend.describe(), reason)
    return backend, reason
