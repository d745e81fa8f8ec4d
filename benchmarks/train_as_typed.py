"""``python train/train_kitti.py`` as a user types it, for a few steps: its default config, device (``auto``),
precision, batch 64 and workers, on a KITTI-layout tree written here at KITTI's size, with a randomly initialised
ViT-B/16 tower saved to a folder (no hub here: ``--backbone FOLDER`` is the one argument added); then
bench_train.py's throughput table at batch 64.

    python benchmarks/train_as_typed.py [--steps 4] [--bench]

Prints the command, what it printed, and one line: steps taken, the device, seconds to the first step and per step.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "test"), str(ROOT / "benchmarks")]
import check_io  # noqa: E402

BATCH = 64  # the shipped configs' batch: the tree's list repeats its frames to fill one


def write_data(folder: Path, frames: int):
    """A KITTI tree of ``frames`` training frames at 1242x375 (listed until a batch is full) and 4 test frames,
    and a ViT-B/16 CLIP tower with random weights, saved as from_pretrained reads it."""
    from kitti_tree import write_tree
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tree = write_tree(folder / "kitti", drives={1: frames, 2: 4}, test_drive=2, size=(375, 1242))
    lines = tree.train_list.read_text().splitlines()
    tree.train_list.write_text("\n".join(lines * -(-BATCH // len(lines))) + "\n")
    tower = folder / "tower"
    CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224)).save_pretrained(tower)
    return tree, tower


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="optimizer steps (--max-steps)")
    parser.add_argument("--frames", type=int, default=8, help="distinct training frames in the tree")
    parser.add_argument("--bench", action="store_true", help="then bench_train.py part 1 at batch 64 on cuda")
    check_io.add_arguments(parser)
    args = parser.parse_args()
    if args.steps < 1 or args.frames < 1:
        parser.error("--steps and --frames must be positive")
    folder = Path(tempfile.mkdtemp(prefix="space_clip_train_as_typed_"))
    try:
        return run(args, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)  # a 600 MB tower and the run's checkpoints


def run(args: argparse.Namespace, folder: Path) -> int:
    start = time.time()
    tree, tower = write_data(folder, 1 if args.dry_run else args.frames)
    out = folder / "run"
    command = [sys.executable, str(ROOT / "train" / "train_kitti.py"), "--data-path", str(tree.raw), "--gt-path",
               str(tree.gt), "--filenames", str(tree.train_list), "--filenames-eval", str(tree.test_list),
               "--backbone", str(tower), "--max-steps", str(args.steps), "--out", str(out)]
    print("$ " + " ".join(command[1:]), flush=True)
    if args.dry_run:
        subprocess.run(command[:2] + ["--help"], check=True, capture_output=True)
        return check_io.dry_run_done(args, f"train_kitti.py as typed for {args.steps} steps (data written in "
                                           f"{time.time() - start:.0f} s)")
    began = time.time()
    result = subprocess.run(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(result.stdout[-6000:], flush=True)
    seconds = time.time() - began
    steps_file = out / "steps.jsonl"
    steps = [json.loads(line) for line in steps_file.read_text().splitlines()] if steps_file.is_file() else []
    device = next((line.split(" on ")[1].split(" ")[0] for line in result.stdout.splitlines()
                   if line.startswith("training ") and " on " in line), "?")
    ok = result.returncode == 0 and len(steps) == args.steps and (out / "best.pt").is_file()
    headline = (f"train_kitti.py as typed: {len(steps)} of {args.steps} steps on {device} at batch {BATCH}, "
                f"{seconds:.0f} s with start-up and validation, exit {result.returncode}")
    print(headline, flush=True)
    bench = None
    if ok and args.bench:
        bench = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--device", "cuda",
                                "--batch", str(BATCH), "--steps", "4", "--skip", "part2"], text=True)
    check_io.write(args, headline, steps=len(steps), device=device, seconds=seconds, exit=result.returncode,
                   bench_exit=None if bench is None else bench.returncode)
    return 0 if ok and (bench is None or bench.returncode == 0) else 1


if __name__ == "__main__":
    sys.exit(main())
