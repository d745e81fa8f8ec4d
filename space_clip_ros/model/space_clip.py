"""SPACE-CLIP: a frozen CLIP vision tower and the trainable dual-pathway decoder."""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import torch
from torch import Tensor, nn

from .backbone import FrozenBackbone, load_pretrained_tower
from .config import KITTI_CAMERA, Preprocessing, SpaceClipConfig, TrainingCamera
from .decoder import DecoderOutput, Size, SpaceClipDecoder


class SpaceClip(nn.Module):
    """Metric depth from a frozen vision tower plus the SPACE-CLIP decoder.

    ``SpaceClip(config, encoder)`` wraps an already-built transformers vision model (its weights are the caller's
    business) and builds the decoder with random weights. Use :meth:`from_pretrained_backbone` to start training, and
    :func:`space_clip_ros.load_checkpoint` to get a trained model.
    """

    def __init__(self, config: SpaceClipConfig, encoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.backbone = FrozenBackbone(encoder, config)
        self.decoder = SpaceClipDecoder(config)
        mean, std = config.default_mean_std
        side = self.backbone.image_size
        #: How images are prepared for this model; checkpoints carry their own.
        self.preprocessing = Preprocessing(input_size=(side, side), mean=mean, std=std)
        #: The camera the decoder's metric scale belongs to (for focal-length scale transfer).
        self.training_camera: TrainingCamera = KITTI_CAMERA
        #: Where the weights came from (checkpoint metadata); ``trained`` False marks an untrained decoder.
        self.provenance: dict = {"trained": False}

    @classmethod
    def from_pretrained_backbone(cls, config: SpaceClipConfig, backbone: Optional[str] = None) -> "SpaceClip":
        """Load the frozen tower with ``from_pretrained`` (``backbone`` overrides ``config.backbone``) and build a
        fresh decoder. Raises :class:`BackboneUnavailableError` with instructions when the tower is not available."""
        if backbone is not None:
            config = config.replace(backbone=str(backbone))
        return cls(config, load_pretrained_tower(config.backbone, config.resolved_backbone_type))

    # ------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        """Side of the square image the tower takes (224 for ViT-B/16)."""
        return self.backbone.image_size

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """The decoder's parameters: the only ones an optimizer should see."""
        return (p for p in self.decoder.parameters() if p.requires_grad)

    # ------------------------------------------------------------------
    def forward(
        self,
        pixel_values: Tensor,
        output_size: Optional[Size] = None,
        return_aux: bool = False,
    ) -> DecoderOutput:
        """Depth in metres from normalised images.

        Args:
            pixel_values: (B, 3, S, S) RGB in [0, 1] normalised with the tower's mean/std, S = :attr:`input_size`.
            output_size: (H, W) of the output; default (S, S).
            return_aux: also return the auxiliary heads' outputs (training only).

        Returns:
            depth (B, 1, H, W), or ``(depth, aux_list)`` with ``return_aux``.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"pixel_values must be (batch, 3, height, width), got {tuple(pixel_values.shape)}")
        height, width = pixel_values.shape[-2:]
        hidden_states, pooled = self.backbone(pixel_values)
        return self.decoder(
            hidden_states,
            pooled,
            output_size=output_size if output_size is not None else (height, width),
            grid_size=self.backbone.grid_size(height, width),
            return_aux=return_aux,
        )

    def decode(self, hidden_states: Sequence[Tensor], pooled: Tensor, output_size: Optional[Size] = None,
               grid_size: Optional[Size] = None, return_aux: bool = False) -> DecoderOutput:
        """Depth from features the caller's own frozen tower already computed (e.g. the vision encoder of a VLA);
        the encoder is not run again. Arguments as :meth:`SpaceClipDecoder.forward`."""
        return self.decoder(hidden_states, pooled, output_size=output_size, grid_size=grid_size,
                            return_aux=return_aux)
