"""SPACE-CLIP's training loss: (1 - w) SILog + w SSIM on the main output, plus weighted SILog on auxiliary outputs.

Formulas from the paper and the release (the loss definitions below name their source):
SILog = 10 sqrt(Var(g) + (1 - 0.85) Mean(g)^2), g = log pred - log gt over all valid pixels of the batch;
SSIM on pred and gt min-max normalised, 11x11 Gaussian window (sigma 1.5), loss = mean(1 - SSIM) over valid pixels.

Two versions (``SpaceClipLoss(version=...)``):
  release  Var biased; valid = gt in (min_depth, max_depth); SSIM normalised per sample by its valid gt range.
  paper    the authors' first code version: Var unbiased; valid = gt > min_depth; SSIM normalised by one min and max
           over every ground-truth pixel of the batch (zeros where there is no ground truth included).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F


class GlobalBatch:
    """The processes of a torchrun run, for losses over the global batch: ``sum`` adds a tensor over all processes
    differentiably (its gradient reaches every process's share), ``min``/``max`` are plain reductions.

    DDP averages gradients over the ``world`` processes; a loss that every process computes from the global sums is
    then optimised exactly as one process would optimise it on the whole batch (the tests check the gradients)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.world = dist.get_world_size()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(tensor)

    def min(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.MIN)
        return out

    def max(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
        return out


LOSS_VERSIONS = ("release", "paper")


def silog_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, variance_focus: float = 0.85,
               eps: float = 1e-7, unbiased: bool = False, group: Optional[GlobalBatch] = None) -> torch.Tensor:
    """Scale-invariant log loss over the valid pixels of the whole batch; (B, 1, H, W) inputs, pred resized to gt.
    ``unbiased``: the variance with Bessel's correction (the paper's first code version). With ``group`` the batch
    is the global one: the sums of g, g^2 and the pixel count are added over all processes first.

    Masked sums over every pixel (no boolean indexing, nothing read on the host: the training step never waits for
    the device); a batch without a valid pixel gives 0, one valid pixel a variance of 0."""
    pred = _to_gt_size(pred.float(), gt)
    g = torch.log(pred.clamp_min(eps)) - torch.log(gt.float().clamp_min(eps))
    g = torch.where(mask, g, torch.zeros_like(g)).double()
    sums = torch.stack([g.sum(), (g * g).sum(), mask.sum().double()])
    if group is not None:
        sums = group.sum(sums)
    n = sums[2].detach()
    mean = sums[0] / n.clamp_min(1.0)
    if unbiased:
        var = (sums[1] - sums[0] * mean) / (n - 1).clamp_min(1.0)
    else:
        var = sums[1] / n.clamp_min(1.0) - mean * mean
    var = torch.where(n < 2, torch.zeros_like(var), var)
    d = var.clamp_min(0.0) + (1.0 - variance_focus) * mean * mean
    loss = (10.0 * torch.sqrt(d.clamp_min(eps))).float()
    return torch.where(n < 1, pred.sum() * 0.0, loss)


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] @ g[None, :])[None, None]


def ssim_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, window: int = 11, sigma: float = 1.5,
              eps: float = 1e-6, batch_range: bool = False, group: Optional[GlobalBatch] = None) -> torch.Tensor:
    """mean(1 - SSIM) over valid pixels, each sample normalised by its valid ground-truth range; with
    ``batch_range`` (the paper's first code version) by the min and max of every ground-truth pixel of the batch.
    With ``group``: the mean over the global batch's valid pixels, as this process's sum over the global count times
    the world size (DDP's gradient averaging then yields the global mean's gradient); the batch range is global."""
    pred = _to_gt_size(pred.float(), gt)
    gt = gt.float()
    count = mask.sum().double()
    if group is not None:
        count = group.sum(count.detach().clone())
    if batch_range:
        lo, hi = gt.min(), gt.max()
        if group is not None:
            lo, hi = group.min(lo), group.max(hi)
        span = hi - lo
        x = ((pred - lo) / span).clamp(0, 1)
        y = ((gt - lo) / span).clamp(0, 1)
    else:  # each sample's valid range, by masked min and max (a sample without valid pixels: 0..1)
        inf = torch.full_like(gt, float("inf"))
        lo = torch.where(mask, gt, inf).amin(dim=(1, 2, 3), keepdim=True)
        hi = torch.where(mask, gt, -inf).amax(dim=(1, 2, 3), keepdim=True)
        some = mask.any(dim=(1, 2, 3), keepdim=True)
        lo, hi = torch.where(some, lo, torch.zeros_like(lo)), torch.where(some, hi, torch.ones_like(hi))
        span = (hi - lo).clamp_min(eps)
        x = ((pred - lo) / span).clamp(0, 1)
        y = ((gt - lo) / span).clamp(0, 1)
        y = torch.where(mask, y, torch.zeros_like(y))
    w = _gaussian_window(window, sigma, x.device, x.dtype)
    pad = window // 2

    def blur(t):
        return F.conv2d(t, w, padding=pad)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    total = torch.where(mask, 1.0 - ssim, torch.zeros_like(ssim)).double().sum()
    none = count < 1  # no valid pixel in the (global) batch: 0
    if group is None:
        return torch.where(none, pred.sum() * 0.0, (total / count.clamp_min(1.0)).float())
    # Gradient of this process's share (times world: DDP averages), value of the global mean on every process.
    share = total * group.world / count.clamp_min(1.0)
    value = group.sum(total.detach().clone()).detach() / count.clamp_min(1.0)
    return torch.where(none, pred.sum() * 0.0, (share + (value - share).detach()).float())


def _to_gt_size(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    if pred.shape[-2:] != gt.shape[-2:]:
        pred = F.interpolate(pred, size=gt.shape[-2:], mode="bilinear", align_corners=True)
    return pred


class SpaceClipLoss(torch.nn.Module):
    """(1 - w_ssim) SILog + w_ssim SSIM on the main output, + sum_j aux_weights[j] SILog(aux_j)."""

    def __init__(self, w_ssim: float = 0.5, aux_weights: Sequence[float] = (), min_depth: float = 1e-3,
                 max_depth: float = 80.0, version: str = "release", group: Optional[GlobalBatch] = None):
        super().__init__()
        if version not in LOSS_VERSIONS:
            raise ValueError(f"loss version must be one of {LOSS_VERSIONS}, got {version!r}")
        self.w_ssim, self.aux_weights = float(w_ssim), [float(w) for w in aux_weights]
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.version = version
        self.group = group

    def forward(self, pred: torch.Tensor, gt: torch.Tensor,
                aux: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        paper = self.version == "paper"
        mask = gt > self.min_depth if paper else (gt > self.min_depth) & (gt < self.max_depth)
        group = self.group
        silog = silog_loss(pred, gt, mask, unbiased=paper, group=group)
        total = (1.0 - self.w_ssim) * silog
        out = {"silog": silog.detach()}
        if self.w_ssim > 0:
            ssim = ssim_loss(pred, gt, mask, batch_range=paper, group=group)
            total = total + self.w_ssim * ssim
            out["ssim"] = ssim.detach()
        aux_total = pred.new_zeros(())
        for weight, aux_pred in zip(self.aux_weights, aux or (), strict=False):
            if weight > 0:
                aux_total = aux_total + weight * silog_loss(aux_pred, gt, mask, unbiased=paper, group=group)
        if aux:
            out["aux"] = aux_total.detach()
            total = total + aux_total
        out["loss"] = total
        return out
