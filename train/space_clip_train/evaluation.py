"""Running a model over a dataset's list: predictions, flip test-time augmentation, metrics, visual grids.

Shared by the trainer (validation each epoch) and eval_kitti.py / eval_nyu.py, so all report the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from space_clip_ros.device import PRECISIONS
from space_clip_ros.outputs import colorize

from .data import DepthDataset, collate
from .metrics import MetricAverager, evaluate_image, prediction_size


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def predict(model: torch.nn.Module, pixel_values: torch.Tensor, output_size: Tuple[int, int],
            flip_tta: bool = False, autocast_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """(B, 1, H, W) float32 depth; with ``flip_tta`` the mean with the flipped input's flipped prediction."""
    with torch.autocast(pixel_values.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        depth = model(pixel_values, output_size=output_size).float()
        if flip_tta:
            flipped = model(torch.flip(pixel_values, dims=[3]), output_size=output_size).float()
            depth = 0.5 * (depth + torch.flip(flipped, dims=[3]))
    return depth


def eval_loader(dataset: DepthDataset, workers: int = 2, batch_size: int = 1) -> torch.utils.data.DataLoader:
    """Each process evaluates its own share of the list under torchrun (results are summed afterwards)."""
    sampler = None
    if is_distributed():
        indices = list(range(dist.get_rank(), len(dataset), dist.get_world_size()))
        sampler = indices
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler,
                                       num_workers=workers, collate_fn=collate)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, device: torch.device, protocol: str = "standard", crop: str = "garg",
             flip_tta: bool = False, min_depth: float = 1e-3, max_depth: float = 80.0, keep_images: int = 0,
             autocast_dtype: Optional[torch.dtype] = None, progress: bool = False,
             ground_truth: Optional[Callable[[int], Optional[np.ndarray]]] = None) -> Tuple[Dict[str, float], list]:
    """Metrics of ``model`` over ``loader`` (an evaluation loader of a DepthDataset) and up to ``keep_images``
    (rgb, gt, pred) triples for pictures. ``ground_truth(index)`` supplies full-resolution depth (e.g. projected
    Velodyne) instead of the maps the dataset loads. Under torchrun the metric sums of all processes are combined."""
    was_training = model.training
    model.eval()
    averager = MetricAverager()
    kept: list = []
    dataset = loader.dataset
    dataset.skips.skipped.clear()
    batches = loader
    if progress:
        from tqdm import tqdm
        batches = tqdm(loader, desc=f"evaluating ({protocol})", leave=False)
    for batch in batches:
        dataset.record_skips(batch)
        if not batch["n"]:
            continue
        if ground_truth is not None:  # None for a frame without ground truth: left out (the callable counts it)
            gts = [ground_truth(int(i)) for i in batch["index"]]
            rows = [i for i, g in enumerate(gts) if g is not None]
            if not rows:
                continue
            gts = [gts[i] for i in rows]
            batch = {**batch, "image": batch["image"][rows]}
            pixels = batch["pixel_values"][rows].to(device, non_blocking=True)
        else:
            gts = [d[0].numpy() for d in batch["depth"]]
            pixels = batch["pixel_values"].to(device, non_blocking=True)
        fixed = prediction_size(protocol, dataset.name)
        sizes = {fixed} if fixed else {g.shape for g in gts}
        if len(sizes) == 1:
            preds = list(predict(model, pixels, sizes.pop(), flip_tta, autocast_dtype)[:, 0])
        else:
            preds = [predict(model, pixels[i:i + 1], g.shape, flip_tta, autocast_dtype)[0, 0]
                     for i, g in enumerate(gts)]
        for i, (gt, pred) in enumerate(zip(gts, preds, strict=True)):
            pred_np = pred.cpu().numpy()
            averager.update(evaluate_image(gt, pred_np, protocol, crop, min_depth, max_depth, dataset.name))
            if len(kept) < keep_images:
                kept.append((batch["image"][i].permute(1, 2, 0).numpy(), gt, pred_np))
    if is_distributed():
        state = torch.tensor(averager.state(), dtype=torch.float64, device=device)
        dist.all_reduce(state)
        averager = MetricAverager()
        averager.merge(state.tolist())
    model.train(was_training)
    return averager.result(), kept


def image_grid(triples: List[tuple], max_depth: float = 80.0, width: int = 704) -> np.ndarray:
    """Rows of RGB | ground truth | prediction (coloured, turbo, same range), each panel ``width`` wide: (H, W, 3)
    uint8. Sparse ground truth is dilated a little so it can be seen."""
    import cv2

    rows = []
    for rgb, gt, pred in triples:
        height = int(round(width * rgb.shape[0] / rgb.shape[1]))
        panels = []
        rgb8 = (np.clip(rgb, 0, 1) * 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
        panels.append(cv2.resize(rgb8, (width, height), interpolation=cv2.INTER_AREA))
        gt_show = cv2.dilate(np.where(np.isfinite(gt), gt, 0).astype(np.float32), np.ones((3, 3), np.uint8))
        for depth in (gt_show, pred):
            coloured = colorize(torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)), 1e-3,
                                max_depth).numpy()
            panels.append(cv2.resize(coloured, (width, height), interpolation=cv2.INTER_NEAREST))
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((1, 3 * width, 3), np.uint8)


def evaluation_parser(doc: str) -> argparse.ArgumentParser:
    """The evaluation commands' parser: what to evaluate (a checkpoint, or saved predictions of any method)."""
    p = argparse.ArgumentParser(prog="evaluate.py", description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, help="a space_clip_ros checkpoint to run")
    what.add_argument("--pred-dir", type=Path, help="saved predictions of any method (see above)")
    return p


def add_run_options(parser) -> None:
    """The options of eval_kitti.py and eval_nyu.py for running a checkpoint and writing the result."""
    from pathlib import Path

    parser.add_argument("--flip-tta", action="store_true",
                        help="average with the horizontally flipped input's prediction")
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=sorted(PRECISIONS), default="fp32")
    parser.add_argument("--backbone", help="local folder of the CLIP tower when the checkpoint references a hub id")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--strict", action="store_true", help="a missing or unreadable file is an error, not a skip")
