"""Running a model over a dataset's list: predictions, flip test-time augmentation, metrics, visual grids; and the
one evaluation path of evaluate.py's datasets (KITTI, NYU, a folder): saved predictions read and scored line by
line, a checkpoint loaded with its warnings, the closing report.

Shared by the trainer (validation each epoch) and evaluate.py, so all report the same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from space_clip_ros.dense_outputs import colorize
from space_clip_ros.device import PRECISIONS

from .data import DepthDataset, loader
from .metrics import MetricAverager, evaluate_image, format_table, prediction_size, write_json


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
    return loader(dataset, workers, batch_size=batch_size, shuffle=False, sampler=sampler)


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
    """The options of evaluate.py --dataset kitti / nyu for running a checkpoint and writing the result."""
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


# ---------------------------------------------------------------------- evaluate.py's one path
def read_prediction(pred_dir: Path, image: str, read_png: Callable[[Path], np.ndarray]) -> np.ndarray:
    """A saved prediction for list image ``image``: ``pred_dir/<image without extension>.npy`` (float32 metres,
    (H, W), or with a single extra axis) or ``.png`` (read by the dataset's ``read_png``). ``ValueError`` says which
    files were looked for."""
    stem = pred_dir / Path(image.lstrip("/")).with_suffix("")
    npy, png = stem.with_suffix(".npy"), stem.with_suffix(".png")
    if npy.is_file():
        pred = np.load(npy, allow_pickle=False)
        if pred.ndim > 2:
            pred = pred.squeeze()
        if pred.ndim != 2:
            raise ValueError(f"{npy}: expected an (H, W) depth map, got shape {pred.shape}")
        return pred.astype(np.float32)
    if png.is_file():
        return read_png(png)
    raise ValueError(f"no prediction {stem}.npy or {stem}.png")


def evaluate_saved(samples, ground_truth: Callable[[int, object], np.ndarray],
                   prediction: Callable[[object], np.ndarray],
                   score: Callable[[np.ndarray, np.ndarray], Optional[Dict[str, float]]], skips, strict: bool
                   ) -> Dict[str, float]:
    """Saved predictions against the ground truth, line by line: a line whose ground truth or prediction cannot be
    read is skipped with its reason (``--strict``: an error naming the line); a prediction that cannot be scored
    (wrong size, NaN) is an error naming the image. Metrics averaged over images."""
    averager = MetricAverager()
    for index, sample in enumerate(samples):
        try:
            gt, pred = ground_truth(index, sample), prediction(sample)
        except ValueError as error:
            if strict:
                raise FileNotFoundError(f"line {sample.line_no}: {error} (--strict)") from None
            skips.skip(sample, str(error))
            continue
        try:
            averager.update(score(gt, pred))
        except ValueError as error:
            raise ValueError(f"{sample.image}: {error}") from None
    return averager.result()


def load_for_evaluation(args, dataset: Optional[str], device="cpu"):
    """The checkpoint of ``args`` (``--checkpoint``, ``--backbone``) on ``device``, with a warning on stderr when it
    is marked untrained or was trained on another dataset than ``dataset`` (None: any)."""
    import sys

    from space_clip_ros.checkpoint import load_checkpoint

    model = load_checkpoint(args.checkpoint, device=device, backbone=args.backbone)
    if not model.provenance.get("trained", False):
        print("warning: this checkpoint is marked UNTRAINED: its numbers mean nothing", file=sys.stderr)
    trained_on = model.provenance.get("dataset")
    if dataset is not None and trained_on not in (None, dataset):
        print(f"warning: this checkpoint was trained on {trained_on}, not {dataset}", file=sys.stderr)
    return model


def report(results: Dict[str, float], title: str, args, **fields) -> None:
    """The closing report of evaluate.py: the metrics table, the skipped lines on stderr, and ``--out``'s JSON
    (``fields`` added, with the number of skipped lines)."""
    import sys

    print(format_table(results, title))
    if args.skips.skipped:
        print(f"warning: {args.skips.summary()}", file=sys.stderr)
    if args.out:
        write_json(results, args.out, skipped=len(args.skips.skipped), **fields)
        print(f"wrote {args.out}")


def settle_crop(args, dataset: str) -> None:
    """``args.crop`` as the protocol table has it: a protocol with a crop of its own (the release's, the paper's)
    uses that one whatever ``--crop`` says, and a note on stderr says so when they differ."""
    import sys

    from . import protocols

    entry = protocols.protocol(dataset, args.protocol)
    if entry.crop is not None and args.crop != entry.crop:
        print(f"note: the {dataset} {entry.name} protocol uses crop {entry.crop} ({entry.describe()}), not "
              f"--crop {args.crop}", file=sys.stderr)
        args.crop = entry.crop
