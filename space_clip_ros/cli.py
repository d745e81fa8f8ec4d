"""space-clip-depth: metric depth for image files (or the built-in synthetic frame) from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np


def _load_rgb(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"could not read image '{path}' (missing, or not a format OpenCV reads)")
    return np.ascontiguousarray(bgr[..., ::-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="space-clip-depth",
        description="Metric depth with SPACE-CLIP for image files; with no images, a built-in synthetic street frame.",
    )
    parser.add_argument("images", nargs="*", type=Path, help="image files (any size)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="a space_clip_ros checkpoint (see space-clip-convert)")
    source.add_argument("--untrained", action="store_true",
                        help="run the real pipeline on a small UNTRAINED model (random weights, meaningless depth)")
    parser.add_argument("--backbone", help="hub id or local folder overriding the checkpoint's vision tower")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--precision", default="auto",
                        help="auto (fp16 on CUDA, fp32 on the CPU) | fp32 | fp16 | bf16 (default auto)")
    parser.add_argument("--backend", default="auto",
                        help="auto | eager | compile | cudagraph | openvino | onnxruntime (default auto)")
    parser.add_argument("--fx", type=float, help="focal length (px) of the camera, for focal-length scale transfer")
    parser.add_argument("--out", type=Path, default=Path("depth_out"), help="output folder (default depth_out)")
    parser.add_argument("--colormap", default="turbo")
    parser.add_argument("--max-depth", type=float, default=80.0, help="top of the colour range, metres")
    args = parser.parse_args(argv)

    import torch

    from .checkpoint import CheckpointError
    from .dense_outputs import colorize
    from .estimator import DepthEstimator
    from .model import BackboneUnavailableError
    from .model.untrained import UNTRAINED_LABEL, build_untrained_model

    if args.checkpoint is None and not args.untrained:
        parser.error("no model: pass --checkpoint FILE (a trained decoder; convert the authors' release with "
                     "space-clip-convert), or --untrained to see the pipeline run with random weights")
    try:
        model = build_untrained_model() if args.untrained else args.checkpoint
        estimator = DepthEstimator(model, device=args.device, precision=args.precision, backbone=args.backbone,
                                   backend=args.backend)
    except (CheckpointError, BackboneUnavailableError, ValueError) as error:
        print(f"space-clip-depth: error: {error}", file=sys.stderr)
        return 2
    tag = "" if estimator.trained else f"_{UNTRAINED_LABEL}"
    if not estimator.trained:
        print("WARNING: this model is UNTRAINED (random weights): its depth is meaningless; "
              "pass --checkpoint for real depth.", file=sys.stderr)

    frames: List = []
    if args.images:
        for path in args.images:
            try:
                frames.append((path.stem, _load_rgb(path), args.fx))
            except ValueError as error:
                print(f"space-clip-depth: error: {error}", file=sys.stderr)
                return 2
    else:
        from .synthetic import KITTI_K, render_scene

        frames.append(("synthetic_street", render_scene()[0], args.fx if args.fx else KITTI_K[0]))

    args.out.mkdir(parents=True, exist_ok=True)
    import cv2

    print(f"model: {'trained' if estimator.trained else 'UNTRAINED'} ({estimator.model.provenance.get('source', '?')}),"
          f" device {estimator.device}, {args.precision}, backend {estimator.backend_name}")
    print(f"{'image':<24} {'size':>10} {'min m':>8} {'median m':>9} {'max m':>8} {'ms':>8}")
    for name, rgb, fx in frames:
        start = time.perf_counter()
        depth = estimator(rgb, fx=fx)
        elapsed = (time.perf_counter() - start) * 1000
        np.save(args.out / f"{name}_depth{tag}.npy", depth)
        colour = colorize(torch.from_numpy(depth), 0.5, args.max_depth, args.colormap).numpy()
        cv2.imwrite(str(args.out / f"{name}_depth{tag}.png"), np.concatenate([rgb, colour], 0)[..., ::-1])
        print(f"{name:<24} {rgb.shape[1]:>5}x{rgb.shape[0]:<4} {depth.min():8.2f} {np.median(depth):9.2f} "
              f"{depth.max():8.2f} {elapsed:8.1f}")
    print(f"wrote {len(frames)} depth map(s) (.npy metres, .png input above colour depth) to {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
