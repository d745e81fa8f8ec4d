"""ROS-free inference: RGB uint8 images in, float32 metres out."""

from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from .model import SpaceClip
from .runtime import resolve_device, resolve_precision

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

    Preprocessing follows the authors' training: the whole image is resized (bicubic, antialiased, aspect ratio not
    kept) to the tower's input size and normalised with the checkpoint's mean/std, in torch on the model's device.

    Args:
        model: a :class:`SpaceClip` or the path of a checkpoint.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``fp32``, ``fp16`` (CUDA) or ``bf16``.
        backbone: with a checkpoint path, a hub id or folder that overrides the tower the checkpoint names.
    """

    def __init__(
        self,
        model: Union[SpaceClip, str, "os.PathLike[str]"],
        device: Union[str, torch.device] = "auto",
        precision: str = "fp32",
        backbone: Optional[str] = None,
    ) -> None:
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device)
        if not isinstance(model, SpaceClip):
            from .checkpoint import load_checkpoint

            model = load_checkpoint(model, device="cpu", backbone=backbone)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        prep = model.preprocessing
        self.input_size: Size = tuple(prep.input_size)  # type: ignore[assignment]
        self._mean = torch.tensor(prep.mean, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(prep.std, device=self.device).view(1, 3, 1, 1)

    @property
    def trained(self) -> bool:
        """False for a decoder that was never trained (its output is not depth)."""
        return bool(self.model.provenance.get("trained", False))

    def focal_scale(self, fx: float, width: int) -> float:
        """Factor from the model's metric scale to that of a camera with focal ``fx`` px at ``width`` px."""
        return self.model.training_camera.scale_for(fx, width)

    # ------------------------------------------------------------------
    def preprocess(self, images: Sequence[Image]) -> torch.Tensor:
        """(B, 3, S, S) normalised pixel values on the model's device, in the model's dtype."""
        sizes = {img.shape[:2] for img in images}
        if len(sizes) == 1:
            batch = torch.from_numpy(np.stack(images)).to(self.device, non_blocking=True)
            resized = self._resize(batch)
        else:
            resized = torch.cat([self._resize(torch.from_numpy(img)[None].to(self.device)) for img in images])
        return ((resized - self._mean) / self._std).to(self.dtype)

    def _resize(self, uint8_bhwc: torch.Tensor) -> torch.Tensor:
        x = uint8_bhwc.permute(0, 3, 1, 2).float().div_(255.0)
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bicubic", align_corners=False, antialias=True)
        return x.clamp_(0.0, 1.0)

    @torch.inference_mode()
    def predict_tensor(self, images: Sequence[Image], output_sizes: Sequence[Size]) -> List[torch.Tensor]:
        """Depth (H, W) float32 tensors on the model's device, one per image, each at its output size."""
        depth = self.model(self.preprocess(images)).float()
        if len(set(output_sizes)) == 1:
            size = output_sizes[0]
            if tuple(depth.shape[-2:]) != tuple(size):
                depth = F.interpolate(depth, size=size, mode="bilinear", align_corners=False)
            return list(depth[:, 0])
        return [F.interpolate(d[None], size=s, mode="bilinear", align_corners=False)[0, 0]
                for d, s in zip(depth, output_sizes)]

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
        scales = self._scales(batch, fx)
        out = []
        for depth, scale in zip(self.predict_tensor(batch, sizes), scales):
            if scale != 1.0:
                depth = depth * scale
            out.append(depth.cpu().numpy().astype(np.float32, copy=False))
        return out[0] if single else out

    __call__ = predict

    def _scales(self, batch: Sequence[Image], fx: Union[None, float, Sequence[float]]) -> List[float]:
        if fx is None:
            return [1.0] * len(batch)
        values = [fx] * len(batch) if np.isscalar(fx) else list(fx)  # type: ignore[list-item]
        if len(values) != len(batch):
            raise ValueError(f"got {len(values)} focal lengths for {len(batch)} images")
        return [self.focal_scale(float(f), img.shape[1]) for f, img in zip(values, batch)]
