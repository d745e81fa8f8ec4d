"""CPU backends that run the model's ONNX export in another runtime: OpenVINO and ONNX Runtime.

The model is exported when the backend is built (:func:`space_clip_ros.export.export_onnx`, depth at the model's
native size; the frame path around it stays in torch). Exports are cached by a fingerprint of the model's weights and
configuration in ``$SPACE_CLIP_ROS_CACHE`` (default ``~/.cache/space_clip_ros/onnx``; ``off`` disables it), so a node
restarted with the same checkpoint starts in a second instead of exporting again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch import Tensor

from ..export import export_onnx
from ..model import SpaceClip
from .base import Backend, BackendUnavailableError, openvino_has_bf16, require_module, user_cache_folder

LOG = logging.getLogger("space_clip_ros.inference")
CACHE_ENV = "SPACE_CLIP_ROS_CACHE"
EXPORT_FORMAT = 1  # bump when the exported graph changes for the same model


def onnx_cache_folder() -> Optional[Path]:
    """Where exports are cached (``$SPACE_CLIP_ROS_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``); None: off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in ("", "off", "0", "none") else Path(value)
    return user_cache_folder("onnx")


def model_fingerprint(model: SpaceClip) -> str:
    """A digest of everything the export depends on: every weight's bytes, the configuration, the preprocessing,
    torch's version and the export format."""
    digest = hashlib.blake2b(digest_size=16)
    meta = {"config": model.config.to_dict(), "preprocessing": model.preprocessing.to_dict(),
            "torch": torch.__version__, "format": EXPORT_FORMAT}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


def exported_model(model: SpaceClip, load: Callable[[str], None]) -> None:
    """Export ``model`` (or take its cached export) and hand the file's path to ``load``."""
    folder = onnx_cache_folder()
    if folder is not None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            LOG.warning("ONNX export cache %s is not writable (%s); exporting to a temporary folder", folder, error)
            folder = None
    if folder is None:
        with tempfile.TemporaryDirectory(prefix="space_clip_onnx_") as tmp:
            load(str(export_onnx(model, Path(tmp) / "model.onnx")))
        return
    path = folder / f"{model_fingerprint(model)}.onnx"
    if path.is_file():
        try:
            load(str(path))
            LOG.info("ONNX export from the cache: %s", path)
            return
        except Exception as error:  # noqa: BLE001 - a damaged cache entry is exported again
            LOG.warning("cached ONNX export %s could not be read (%s); exporting again", path, error)
    partial = export_onnx(model, folder / f".{path.stem}.{os.getpid()}.tmp.onnx")
    os.replace(partial, path)  # atomic: a concurrent reader sees a whole file or none
    LOG.info("exported the model to ONNX: %s", path)
    load(str(path))


def _needs_cpu(name: str, device: torch.device) -> None:
    if device.type != "cpu":
        raise BackendUnavailableError(
            f"backend {name!r} runs on the CPU, got device {device}; on CUDA use 'auto' or 'cudagraph', and for "
            "TensorRT export the model with space-clip-export")


class _OnnxBackend(Backend):
    """Shared set-up: an fp32 CPU copy of the model exported to ONNX; pixel values go in as float32. The runtime holds
    its own copy of the weights, so the torch ones may be released (DepthEstimator ``release_weights``)."""

    needs_torch_weights = False

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        _needs_cpu(self.name, device)
        super().__init__(model.to(device="cpu", dtype=torch.float32).eval(), device, dtype)
        self.input_dtype = torch.float32

    def _with_export(self, load: Callable[[str], None]) -> None:
        exported_model(self.model, load)


class OnnxRuntimeBackend(_OnnxBackend):
    """ONNX Runtime's CPU execution provider, fp32."""

    name = "onnxruntime"

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype,
                 threads: Optional[int] = None) -> None:
        if dtype != torch.float32:
            raise BackendUnavailableError(
                "backend 'onnxruntime' runs fp32 on the CPU; for bf16 on the CPU use backend 'openvino' "
                "(pip install 'space_clip_ros[openvino]') or 'eager'")
        ort = require_module("onnxruntime")
        super().__init__(model, device, dtype)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(threads or os.cpu_count() or 1)

        def load(path: str) -> None:
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        self._with_export(load)

    def forward(self, pixel_values: Tensor) -> Tensor:
        pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self._session.run(["depth"], {"pixel_values": pixels})[0])


class OpenVinoBackend(_OnnxBackend):
    """OpenVINO on the CPU: fp32, or bf16 (``INFERENCE_PRECISION_HINT``) where the processor has bf16 support."""

    name = "openvino"
    HINTS = {torch.float32: "f32", torch.bfloat16: "bf16"}

    def __init__(self, model: SpaceClip, device: torch.device, dtype: torch.dtype) -> None:
        if dtype not in self.HINTS:
            raise BackendUnavailableError("backend 'openvino' runs fp32 or bf16 on the CPU")
        ov = require_module("openvino")
        core = ov.Core()
        if dtype == torch.bfloat16 and not openvino_has_bf16():
            raise BackendUnavailableError(
                "this processor has no bf16 support in OpenVINO (no AVX512-BF16 or AMX); use precision fp32")
        super().__init__(model, device, dtype)
        config = {"INFERENCE_PRECISION_HINT": self.HINTS[dtype], "PERFORMANCE_HINT": "LATENCY"}

        def load(path: str) -> None:
            compiled = core.compile_model(core.read_model(path), "CPU", config)
            self._request = compiled.create_infer_request()

        self._with_export(load)

    def forward(self, pixel_values: Tensor) -> Tensor:
        pixels = pixel_values.detach().to("cpu", torch.float32).contiguous().numpy()
        result = self._request.infer({0: pixels})
        # The request reuses its output buffer on the next call: copy it out.
        return torch.from_numpy(np.array(result[0], dtype=np.float32, copy=True))
