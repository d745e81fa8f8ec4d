"""Fine-tune a trained SPACE-CLIP decoder for your camera, on your robot's recordings (or on a KITTI / NYU list),
over the frozen CLIP tower.

    space-clip-bag2dataset BAG --image-topic ... --camera-info-topic ... --depth-topic ... --out DIR
    python train/finetune.py --data DIR --init space_clip_kitti.pt --out runs/my_robot
    python train/finetune.py --dataset kitti --data-path RAW --gt-path DEPTH --init best.pt --out runs/more

DIR holds images/, depth/ (uint16, m x 256), train.txt, val.txt and camera.yaml (train/space_clip_train/folder.py
says the format and the training size rule: crops at the camera's own aspect). The decoder starts from --init's
weights (its architecture and tower too); pixels without depth are masked in the losses, as KITTI's are. best.pt and
last.pt carry the folder's camera (fx and width) and output size, so the node's focal-length transfer is 1.0 on that
camera. Options as train_kitti.py (--batch-size --epochs --max-steps --device --workers --resume --set KEY=VALUE).
"""

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from space_clip_train import cli, folder
from space_clip_train import config as cfgmod
from space_clip_train.config import CONFIGS, ConfigError
from space_clip_train.datasets import DATASETS

from space_clip_ros.checkpoint import CheckpointError, read_checkpoint


def build_parser() -> argparse.ArgumentParser:
    p = cli.build_parser("kitti")
    p.prog, p.description = "finetune.py", __doc__.split("\n\n")[0]
    p.add_argument("--data", type=Path, help="a training folder (space-clip-bag2dataset's output)")
    p.add_argument("--dataset", choices=("kitti", "nyu"), help="fine-tune on a KITTI or NYU list instead of --data")
    p.add_argument("--init", type=Path, help="the checkpoint to start from (a space_clip_ros .pt)")
    return p


def resolve(args: argparse.Namespace) -> cfgmod.TrainConfig:
    if (args.data is None) == (args.dataset is None):
        raise ConfigError("give --data DIR (your recordings) or --dataset kitti|nyu with --data-path")
    if args.init is None and args.resume is None:
        raise ConfigError("give --init CHECKPOINT.pt, the trained decoder to start from (or --resume RUN/last.pt)")
    source = args.resume or args.init
    try:
        model_config = read_checkpoint(source)["model_config"]
    except (CheckpointError, OSError, KeyError) as error:
        raise ConfigError(f"{source}: {error}") from None
    assignments = list(args.assignments)
    if args.data is not None:
        data = args.data.resolve()
        for name in ("train.txt", "val.txt", "camera.yaml"):
            if not (data / name).is_file():
                raise ConfigError(f"--data {data} has no {name} (space-clip-bag2dataset writes it)")
        if not (data / "val.txt").read_text().strip():
            raise ConfigError(f"{data / 'val.txt'} is empty: convert with --val-fraction > 0, or pass "
                              "--filenames-eval LIST")
        if not any(a.split("=", 1)[0].strip() == "crop" for a in assignments):
            try:
                _, (height, width) = folder.read_camera(data)
                crop = folder.training_size(height, width)
            except (FileNotFoundError, ValueError) as error:
                raise ConfigError(str(error)) from None
            assignments.append(f"crop=[{crop[0]}, {crop[1]}]")
        args.data_path = args.data_path or str(data)
        args.gt_path = args.gt_path or str(data)
        args.filenames = args.filenames or str(data / "train.txt")
        args.filenames_eval = args.filenames_eval or str(data / "val.txt")
        args.config = args.config or CONFIGS / "finetune.yaml"
        config = cli.resolve(argparse.Namespace(**{**vars(args), "assignments": assignments}), "kitti")
    else:
        args.config = args.config or CONFIGS / DATASETS[args.dataset].config
        config = cli.resolve(args, args.dataset)
    config.model = dict(model_config)  # the checkpoint's architecture and tower
    if args.backbone:
        config.model["backbone"] = args.backbone
    return config


def main(argv: Optional[List[str]] = None) -> int:
    from space_clip_train.trainer import Trainer

    args = build_parser().parse_args(argv)
    try:
        config = resolve(args)
    except ConfigError as error:
        print(f"finetune.py: error: {error}", file=sys.stderr)
        return 2
    return cli.run("finetune.py", lambda: Trainer(config, resume=args.resume,
                                                    init=None if args.resume else args.init).fit())


if __name__ == "__main__":
    sys.exit(main())
