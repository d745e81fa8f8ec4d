"""Ground truth from the raw Velodyne scans for the 697-frame Eigen protocol, as monodepth2 builds it, without its
pixel-index bug (its duplicate-pixel test used a wrong linear index, so the nearest point did not always win).

    python train/export_gt_depth.py --data-path RAW --out gt_eigen.npz                 # camera z (default)
    python train/export_gt_depth.py --data-path RAW --out gt_eigen_vel.npz --vel-depth  # Velodyne x, monodepth2's
                                                                                        # legacy --split eigen values
evaluate.py --dataset kitti --gt-path gt_eigen.npz reads the result (keys: images, depth_00000, ...; no pickle).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import numpy as np
from space_clip_train.config import list_path
from space_clip_train.data import read_list
from space_clip_train.kitti import EIGEN_TEST_VELODYNE, velodyne_depth


def export(data_path: Path, filenames: Path, out: Path, vel_depth: bool = False) -> int:
    samples = read_list(filenames)
    if not samples:
        raise ValueError(f"{filenames} has no lines")
    arrays = {}
    for i, sample in enumerate(samples):
        try:
            arrays[f"depth_{i:05d}"] = velodyne_depth(data_path, sample.image, vel_depth=vel_depth)
        except (OSError, KeyError, ValueError) as error:
            raise ValueError(f"line {sample.line_no} ({sample.line!r}): {error!r}; every listed frame needs its "
                             "velodyne_points/data/*.bin and the date folder's calib_cam_to_cam.txt and "
                             "calib_velo_to_cam.txt") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, images=np.array([s.image for s in samples]), vel_depth=np.array(vel_depth), **arrays)
    return len(samples)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="export_gt_depth.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-path", type=Path, required=True, help="KITTI raw root (date folders)")
    p.add_argument("--filenames", default=str(EIGEN_TEST_VELODYNE),
                   help="monodepth2-format list (default: the 697-frame Eigen test list)")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")
    p.add_argument("--vel-depth", action="store_true", help="depth = Velodyne x instead of camera z")
    args = p.parse_args(argv)
    try:
        n = export(args.data_path, list_path(args.filenames), args.out, args.vel_depth)
    except (FileNotFoundError, ValueError) as error:
        print(f"export_gt_depth.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {n} depth maps ({'Velodyne x' if args.vel_depth else 'camera z'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
