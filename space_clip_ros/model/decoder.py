"""The trainable SPACE-CLIP decoder: a FiLM-modulated semantic pathway and a structural pathway, fused stage by stage.

Submodule names follow the authors' release so that their state-dict keys load unchanged
(``film_param_generators``, ``main_path_projections``, ``main_decoder_blocks``, ``structural_path_projections``,
``structural_decoder_blocks``, ``depth_prediction_head``, ``aux_depth_heads``).

Shapes below are for ViT-B/16 at 224x224 (D = 768, a 14x14 patch grid) and channels C = (256, 128, 64, 32).
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import SpaceClipConfig

Size = Tuple[int, int]


def _conv_bn_relu(in_ch: int, out_ch: int) -> List[nn.Module]:
    """3x3 conv (no bias) -> BatchNorm -> ReLU, as a list so callers can extend the Sequential."""
    return [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False); a no-op when the size already matches."""
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ResidualConvBlock(nn.Module):
    """Two 3x3 conv-BN layers with dropout between them and an identity shortcut. (B, C, H, W) -> same."""

    def __init__(self, channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(self.dropout(y)))
        return F.relu(y + x)


class UpsampleBlock(nn.Module):
    """x2 transposed conv, then conv-BN-ReLU. (B, C_in, H, W) -> (B, C_out, 2H, 2W)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.conv = nn.Sequential(*_conv_bn_relu(out_ch, out_ch))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.upsample(x))


def _sigmoid_gate(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 1), nn.Sigmoid())


class StructuralStage(nn.Module):
    """One stage of the structural pathway: upsample the stream, fuse the projected shallow tap.

    ``x`` (B, C_in, h, w) -> (B, C, 2h, 2w); ``skip`` (B, C, h', w') is resized to (2h, 2w) first.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.upsample_low = UpsampleBlock(in_ch, out_ch)
        self.fusion_conv = nn.Sequential(*_conv_bn_relu(2 * out_ch, out_ch))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        up = self.upsample_low(x)
        return self.fusion_conv(torch.cat([up, _resize(skip, up.shape[-2:])], dim=1))


class SemanticStage(nn.Module):
    """One stage of the main (semantic) stream.

    ``x`` (B, C_in, h, w) is upsampled to (B, C, 2h, 2w). The semantic skip (and, when this stage has one, the
    structural skip) are resized to that size and, with ``gated`` (the release), scaled by ``1 + sigmoid(gate(up))``;
    the concatenation is fused by conv-BN-ReLU and a residual block. Output (B, C, 2h, 2w).
    """

    def __init__(self, in_ch: int, out_ch: int, has_structural_skip: bool, dropout: float,
                 gated: bool = True) -> None:
        super().__init__()
        self.has_structural_skip = has_structural_skip
        self.upsample_low = UpsampleBlock(in_ch, out_ch)
        self.skip_clip_gate = _sigmoid_gate(out_ch) if gated else None
        self.skip_struct_gate = _sigmoid_gate(out_ch) if gated and has_structural_skip else None
        fused_in = out_ch * (3 if has_structural_skip else 2)
        self.fusion_conv = nn.Sequential(*_conv_bn_relu(fused_in, out_ch), ResidualConvBlock(out_ch, dropout))

    def forward(self, x: Tensor, semantic_skip: Tensor, structural_skip: Optional[Tensor] = None) -> Tensor:
        up = self.upsample_low(x)
        size = up.shape[-2:]
        semantic = _resize(semantic_skip, size)
        if self.skip_clip_gate is not None:
            semantic = semantic * (1.0 + self.skip_clip_gate(up))
        parts = [up, semantic]
        if self.has_structural_skip:
            if structural_skip is None:
                raise ValueError("this stage was built with a structural skip but none was given")
            structural = _resize(structural_skip, size)
            if self.skip_struct_gate is not None:
                structural = structural * (1.0 + self.skip_struct_gate(up))
            parts.append(structural)
        elif structural_skip is not None:
            raise ValueError("this stage has no structural skip but one was given")
        return self.fusion_conv(torch.cat(parts, dim=1))


def _depth_head(in_ch: int, mid_ch: int, final_kernel: int) -> nn.Sequential:
    """conv-BN-ReLU to ``mid_ch``, then a conv to one channel and a ReLU (depth is non-negative)."""
    return nn.Sequential(*_conv_bn_relu(in_ch, mid_ch), nn.Conv2d(mid_ch, 1, final_kernel, padding=final_kernel // 2),
                         nn.ReLU())


def _paper_head(in_ch: int) -> nn.Sequential:
    """The first code version's head: x2 upsample block to ``in_ch // 2``, a 3x3 conv to one channel, ReLU."""
    return nn.Sequential(UpsampleBlock(in_ch, in_ch // 2), nn.Conv2d(in_ch // 2, 1, 3, padding=1), nn.ReLU())


def tokens_to_map(tokens: Tensor, grid_size: Optional[Size], has_cls_token: bool) -> Tensor:
    """Turn one hidden state (B, [1 +] N, D) into a feature map (B, D, gh, gw).

    The CLS token (index 0) is dropped when ``has_cls_token``. Tokens are laid out row-major over the patch grid; with
    no ``grid_size`` the grid must be square.
    """
    if tokens.ndim != 3:
        raise ValueError(f"a hidden state must be (batch, tokens, dim), got shape {tuple(tokens.shape)}")
    patches = tokens[:, 1:, :] if has_cls_token else tokens
    batch, count, dim = patches.shape
    if grid_size is None:
        side = math.isqrt(count)
        if side * side != count:
            raise ValueError(
                f"{count} patch tokens do not form a square grid; pass grid_size=(rows, cols)"
                + (" (is the CLS-token setting right for this backbone?)" if count in (side * side + 1,) else "")
            )
        grid_size = (side, side)
    rows, cols = int(grid_size[0]), int(grid_size[1])
    if rows * cols != count:
        raise ValueError(f"grid_size {rows}x{cols} does not match {count} patch tokens")
    return patches.transpose(1, 2).reshape(batch, dim, rows, cols)


DecoderOutput = Union[Tensor, Tuple[Tensor, List[Tensor]]]


class SpaceClipDecoder(nn.Module):
    """Dual-pathway decoder from a frozen ViT's hidden states to metric depth.

    It never runs the encoder: give it ``hidden_states`` (a sequence indexed like transformers' output with
    ``output_hidden_states=True``: index 0 the embeddings, index k block k; each (B, [1 +] N, D)) and the pooled
    context vector (B, D) that a caller's own frozen CLIP already computed.
    """

    def __init__(self, config: SpaceClipConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.hidden_size
        channels = config.decoder_channels
        n_struct = config.num_structural_stages

        if config.use_film:
            self.film_param_generators = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, config.film_hidden_size), nn.ReLU(inplace=True),
                              nn.Linear(config.film_hidden_size, 2 * dim))
                for _ in config.semantic_layers
            )
        self.main_path_projections = nn.ModuleList(nn.Conv2d(dim, ch, 1) for ch in channels)
        if n_struct:
            self.structural_path_projections = nn.ModuleList(nn.Conv2d(dim, ch, 1) for ch in channels[:n_struct])
            # The structural stream starts from the unprojected map of the first structural tap.
            self.structural_decoder_blocks = nn.ModuleList(
                StructuralStage(dim if i == 0 else channels[i - 1], channels[i]) for i in range(n_struct)
            )
        paper = config.architecture == "paper"
        self.main_decoder_blocks = nn.ModuleList(
            SemanticStage(channels[max(i - 1, 0)], channels[i], i < n_struct, config.dropout, gated=not paper)
            for i in range(len(channels))
        )
        self.depth_prediction_head = _paper_head(channels[-1]) if paper else _depth_head(channels[-1],
                                                                                         channels[-1] // 2, 3)
        if config.use_aux_heads:
            self.aux_depth_heads = nn.ModuleList(_depth_head(ch, max(ch // 2, 16), 1) for ch in channels[:-1])

    # ------------------------------------------------------------------
    def _check_inputs(self, hidden_states: Sequence[Tensor], pooled: Tensor) -> None:
        needed = self.config.deepest_layer + 1
        if len(hidden_states) < needed:
            raise ValueError(
                f"the decoder taps hidden_states[{self.config.deepest_layer}] but got {len(hidden_states)} entries; "
                "pass every hidden state (embeddings first), e.g. from output_hidden_states=True"
            )
        dim = self.config.hidden_size
        if hidden_states[0].shape[-1] != dim:
            raise ValueError(f"hidden states have width {hidden_states[0].shape[-1]} but the decoder expects {dim}")
        if pooled.ndim != 2 or pooled.shape[-1] != dim or pooled.shape[0] != hidden_states[0].shape[0]:
            raise ValueError(
                f"pooled output must be (batch={hidden_states[0].shape[0]}, {dim}), got {tuple(pooled.shape)}"
            )

    def forward(
        self,
        hidden_states: Sequence[Tensor],
        pooled: Tensor,
        output_size: Optional[Size] = None,
        grid_size: Optional[Size] = None,
        return_aux: bool = False,
    ) -> DecoderOutput:
        """Decode depth in metres.

        Args:
            hidden_states: all hidden states of the tower (embeddings at index 0), each (B, [1 +] N, D).
            pooled: (B, D) pooled context (CLIP: post-LayerNorm CLS), the FiLM input.
            output_size: (H, W) of the returned depth; default the head's native size (16 x the patch grid).
            grid_size: patch grid (rows, cols); default square.
            return_aux: also return the auxiliary heads' depths (needs ``use_aux_heads``).

        Returns:
            depth (B, 1, H, W) in metres, or ``(depth, [aux_0, aux_1, ...])`` with ``return_aux``.
        """
        cfg = self.config
        self._check_inputs(hidden_states, pooled)
        if return_aux and not cfg.use_aux_heads:
            raise ValueError("return_aux=True needs a model built with use_aux_heads=True")

        def tap(index: int) -> Tensor:
            return tokens_to_map(hidden_states[index], grid_size, cfg.has_cls_token)

        semantic = []
        for i, layer in enumerate(cfg.semantic_layers):
            tokens = hidden_states[layer]
            if cfg.use_film:
                # Slices, not chunk(): identical numbers, and an ONNX graph without opset-18 Split attributes.
                film = self.film_param_generators[i](pooled).unsqueeze(1)
                gamma, beta = film[..., : tokens.shape[-1]], film[..., tokens.shape[-1]:]
                tokens = gamma * tokens + beta  # the CLS token is modulated too but dropped below
            semantic.append(self.main_path_projections[i](tokens_to_map(tokens, grid_size, cfg.has_cls_token)))

        structural: List[Tensor] = []
        if cfg.num_structural_stages:
            x_struct = tap(cfg.structural_layers[0])
            for i, layer in enumerate(cfg.structural_layers):
                skip = self.structural_path_projections[i](tap(layer))
                x_struct = self.structural_decoder_blocks[i](x_struct, skip)
                structural.append(x_struct)

        x = semantic[0]
        stages = []
        for i, block in enumerate(self.main_decoder_blocks):
            x = block(x, semantic[i], structural[i] if i < len(structural) else None)
            stages.append(x)

        depth = self.depth_prediction_head(x)
        if cfg.architecture == "paper":  # the first version resized its x2 head's output to the input size first
            depth = _resize(depth, x.shape[-2:])
        size = tuple(output_size) if output_size is not None else tuple(depth.shape[-2:])
        depth = _resize(depth, size)
        if not return_aux:
            return depth
        aux = [_resize(head(feat), size) for head, feat in zip(self.aux_depth_heads, stages[:-1], strict=False)]
        return depth, aux
