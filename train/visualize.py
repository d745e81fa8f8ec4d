"""A Figure-3-style grid: one row per chosen frame, input | ground truth | prediction (turbo, near = warm).

    python train/visualize.py --checkpoint runs/kitti_paper/best.pt --data-path RAW --gt-path ANNOTATED \\
        --frames 0 100 200 --out figure3.png

Frames are line numbers (0-based, among the lines with ground truth) of --filenames (default the Eigen test list).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from space_clip_train.config import list_path
from space_clip_train.data import pil_resize
from space_clip_train.kitti import EIGEN_TEST, KITTI_CROP_SIZE, KittiDepth


def main(argv: Optional[List[str]] = None) -> int:
    import cv2
    import torch
    from space_clip_train.evaluation import image_grid, predict

    from space_clip_ros.checkpoint import load_checkpoint
    from space_clip_ros.device import resolve_device

    p = argparse.ArgumentParser(prog="visualize.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data-path", type=Path, required=True)
    p.add_argument("--gt-path", type=Path, required=True)
    p.add_argument("--filenames", default=str(EIGEN_TEST))
    p.add_argument("--frames", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", type=Path, default=Path("figure3.png"))
    p.add_argument("--device", default="auto")
    p.add_argument("--max-depth", type=float, default=80.0, help="top of the colour range (m)")
    p.add_argument("--backbone", help="local tower folder for a checkpoint that references a hub id")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint, device=device, backbone=args.backbone).eval()
    pre = model.preprocessing
    data = KittiDepth(list_path(args.filenames), args.data_path, args.gt_path, "eval", pre.input_size, pre.mean,
                      pre.std, strict=True)
    bad = [f for f in args.frames if not 0 <= f < len(data)]
    if bad:
        print(f"visualize.py: error: frames {bad} are outside 0..{len(data) - 1}", file=sys.stderr)
        return 2
    triples = []
    with torch.no_grad():
        for index in args.frames:
            item = data[index]
            pixels = torch.from_numpy(item["pixel_values"])[None].to(device)
            pred = predict(model, pixels, KITTI_CROP_SIZE)[0, 0].cpu().numpy()
            gt = pil_resize(item["depth"][0], KITTI_CROP_SIZE, "nearest")
            triples.append((item["image"].transpose(1, 2, 0), np.where(gt > 0, gt, np.nan), pred))
    grid = image_grid(triples, args.max_depth)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), grid[..., ::-1])
    print(f"wrote {args.out} ({grid.shape[1]}x{grid.shape[0]}, {len(triples)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
