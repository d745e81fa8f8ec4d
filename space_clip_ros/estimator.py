"""ROS-free inference: RGB uint8 images in, float32 metres out."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .device import resolve_device, resolve_precision
from .inference import create_backend
from .model import SpaceClip

Image = np.ndarray
Size = Tuple[int, int]


def check_rgb_image(image: object, name: str = "image") -> np.ndarray:
    """Raise a ``ValueError`` naming the problem unless ``image`` is an HxWx3 uint8 array with H, W >= 1."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (HxWx3 uint8 RGB), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (RGB 0..255), got {image.dtype}; "
                         "convert with (img * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1]")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (grey: np.repeat(img[..., None], 3, axis=2); RGBA: img[..., :3])" if image.ndim in (2, 3) else ""
        raise ValueError(f"{name} must be HxWx3 RGB, got shape {image.shape}{hint}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    return image


def _check_size(size: Optional[Sequence[int]]) -> Optional[Size]:
    if size is None:
        return None
    try:
        height, width = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"output_size must be (height, width), got {size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"output_size must be positive, got {size!r}")
    return height, width


class DepthEstimator:
    """Metric depth for RGB images with a SPACE-CLIP model.

    Preprocessing follows the authors' evaluation and train/: the whole image is resized (bicubic, antialiased,
    aspect ratio not kept, 8-bit) to the training size and then to the tower's input size, and normalised with the
    checkpoint's mean/std, in torch on the model's device (:mod:`space_clip_ros.inference.processing`, the same code
    for every backend; within one 8-bit level of train/'s PIL path).

    Args:
        model: a :class:`SpaceClip` or the path of a checkpoint.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto`` (fp16 on CUDA, fp32 on the CPU), ``fp32``, ``fp16`` (CUDA) or ``bf16``.
        backbone: with a checkpoint path, a hub id or folder that overrides the tower the checkpoint names.
        backend: ``auto`` (the fastest available for the device; docs/performance.md), ``eager``, ``compile``,
            ``cudagraph`` (CUDA), ``openvino`` or ``onnxruntime`` (CPU). See :mod:`space_clip_ros.inference`.
        backend_options: keyword arguments for the backend (``cudagraph``: ``compile``, ``max_programs``).
        release_weights: with a backend that runs its own copy of the model (``openvino``, ``onnxruntime``), free
            the torch model's weights once the runtime has it (about 0.7 GB less resident memory for ViT-B/16 here);
            the model object can then no longer run in torch. For callers that own the model (the node does).
    """

    def __init__(
        self,
        model: Union[SpaceClip, str, "os.PathLike[str]"],
        device: Union[str, torch.device] = "auto",
        precision: str = "auto",
        backbone: Optional[str] = None,
        backend: str = "auto",
        release_weights: bool = False,
        **backend_options: Any,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        if not isinstance(model, SpaceClip):
            from .checkpoint import load_checkpoint

            model = load_checkpoint(model, device="cpu", backbone=backbone)
        self.backend, self.backend_reason = create_backend(backend, model, self.device, self.dtype,
                                                           **backend_options)
        self.model = self.backend.model
        self.input_size: Size = self.backend.input_size
        if release_weights and not self.backend.needs_torch_weights:
            from .device import release_torch_weights

            release_torch_weights(self.model, f"the {self.backend.name} backend runs its own copy")

    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def trained(self) -> bool:
        """False for a decoder that was never trained (its output is not depth)."""
        return bool(self.model.provenance.get("trained", False))

    def focal_scale(self, fx: float, width: int) -> float:
        """Factor from the model's metric scale to that of a camera with focal ``fx`` px at ``width`` px."""
        return self.model.training_camera.scale_for(fx, width)

    def compile_state(self) -> str:
        """``off``, ``compiling (k of n programs compiled)``, ``compiled`` or ``failed, ...``: whether the
        backend's compiled code serves yet (the CUDA default compiles in the background; see inference/static.py)."""
        state = getattr(self.backend, "compile_state", None)
        if state is not None:
            return state()
        return "compiled" if self.backend.name == "compile" else "off"

    def programs(self) -> List[str]:
        """The static-shape programs the backend holds, least recently used first
        (:meth:`~.inference.static.StaticShapeBackend.programs`); [] for the other backends."""
        programs = getattr(self.backend, "programs", None)
        return programs() if programs is not None else []

    def wait_compiled(self, timeout: Optional[float] = None) -> bool:
        """Block until a background compilation has finished; True when the compiled code serves every frame."""
        wait = getattr(self.backend, "wait_compiled", None)
        return True if wait is None else bool(wait(timeout))

    def warmup(self) -> None:
        """Run the model once now (compilation, allocation), so that the first frame is not the slow one."""
        self.backend.warmup()

    # ------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image]) -> torch.Tensor:
        """(B, 3, S, S) normalised pixel values on the model's device, in the dtype the backend takes."""
        groups: Dict[Tuple[int, int], List[int]] = {}
        for i, img in enumerate(images):
            groups.setdefault(img.shape[:2], []).append(i)
        parts: List[Optional[torch.Tensor]] = [None] * len(images)
        for indices in groups.values():
            pixels = self.backend.pixel_values(torch.from_numpy(np.stack([images[i] for i in indices])))
            for row, i in enumerate(indices):
                parts[i] = pixels[row:row + 1]
        return torch.cat(parts)  # type: ignore[arg-type]

    @torch.inference_mode()
    def predict_tensor(self, images: Sequence[Image], output_sizes: Sequence[Size],
                       scales: Optional[Sequence[float]] = None) -> List[torch.Tensor]:
        """Depth (H, W) float32 tensors on the model's device, one per image, each at its output size and times its
        focal-length scale when ``scales`` is given.

        The frame path is the backend's own (:meth:`~space_clip_ros.inference.Backend.infer`: one batch per group
        of frames that share an input size and an output size, such as a camera's stream), so every frame takes
        the backend's whole path, its captured CUDA graphs included; groups run one after the other."""
        groups: Dict[Tuple[Tuple[int, ...], Tuple[int, int]], List[int]] = {}
        for i, (img, size) in enumerate(zip(images, output_sizes, strict=True)):
            groups.setdefault((img.shape, (int(size[0]), int(size[1]))), []).append(i)
        out: List[Optional[torch.Tensor]] = [None] * len(images)
        for (_, size), indices in groups.items():
            group_scales = None if scales is None else [scales[i] for i in indices]
            depth = self.backend.infer([images[i] for i in indices], size, group_scales)
            for row, i in enumerate(indices):
                out[i] = depth[row]
        return out  # type: ignore[return-value]

    def predict(
        self,
        images: Union[Image, Sequence[Image]],
        output_size: Optional[Sequence[int]] = None,
        fx: Union[None, float, Sequence[float]] = None,
    ) -> Union[np.ndarray, List[np.ndarray]]:
        """Depth in metres.

        Args:
            images: one HxWx3 uint8 RGB array, or a list of them (any sizes; run as one batch).
            output_size: (H, W) of every output; default each image's own size.
            fx: focal length in pixels of the camera that took each image (one value, or one per image). When given,
                depth is rescaled from the training camera to this one (focal-length scale transfer,
                ``(fx / width) / (fx_train / width_train)``). Default: no transfer.

        Returns:
            float32 HxW metres, or a list of them for a list input.
        """
        single = isinstance(images, np.ndarray)
        batch = [images] if single else list(images)
        if not batch:
            raise ValueError("no images given")
        for i, img in enumerate(batch):
            check_rgb_image(img, "image" if single else f"images[{i}]")
        size = _check_size(output_size)
        sizes = [size or img.shape[:2] for img in batch]
        scales = None if fx is None else self._scales(batch, fx)
        out = [depth.cpu().numpy().astype(np.float32, copy=False)
               for depth in self.predict_tensor(batch, sizes, scales)]
        return out[0] if single else out

    __call__ = predict

    def _scales(self, batch: Sequence[Image], fx: Union[float, Sequence[float]]) -> List[float]:
        values = [fx] * len(batch) if np.isscalar(fx) else list(fx)  # type: ignore[list-item]
        if len(values) != len(batch):
            raise ValueError(f"got {len(values)} focal lengths for {len(batch)} images")
        return [self.focal_scale(float(f), img.shape[1]) for f, img in zip(values, batch, strict=True)]
