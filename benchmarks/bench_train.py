"""Training throughput and memory of train_kitti.py's step against a plain fp32 loop of the same model, in one run;
then: does the synthetic KITTI scene set train (AbsRel after N steps against predicting the mean depth)?

    python benchmarks/bench_train.py [--device cpu] [--batch 4] [--steps 6] [--learn-steps 200]

Part 1 uses a full-size model (ViT-B/16 tower, released decoder) with RANDOM tower weights (the cost does not depend
on them) on 352x704 training crops of a synthetic KITTI tree written to a temp folder. Rows (medians over --steps):
  plain fp32   forward, (1 - w) SILog + w SSIM, backward, AdamW step; nothing else
  trainer fp32 Trainer._train_step: the same plus aux/EMA bookkeeping, grad clipping, scaler, logging
  trainer bf16 the same under bf16 autocast
Part 2 trains a small random tower + small decoder with the real Trainer on the synthetic drives and evaluates on a
held-out drive (standard protocol, Garg crop), next to a constant prediction of the training set's mean depth.
"""

import argparse
import copy
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "train"), str(ROOT / "test"), str(ROOT)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_config(tmp: Path, tower: Path, tree, **extra):
    from space_clip_train import config as cfgmod

    overrides = {"data_path": str(tree.raw), "gt_path": str(tree.gt), "filenames": str(tree.train_list),
                 "filenames_eval": str(tree.test_list), "device": extra.pop("device"), "workers": 2,
                 "out": str(tmp / extra.pop("name")), "log_images": 0}
    config = cfgmod.resolve_config(None).to_dict()
    config.update(overrides)
    model = extra.pop("model", {})
    config["model"].update({"backbone": str(tower), **model})
    config.update(extra)
    return cfgmod.TrainConfig.from_dict(config)


def timed(fn, steps, sync):
    times = []
    for i in range(steps + 1):
        start = time.perf_counter()
        fn(i)
        sync()
        if i:  # the first step warms up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def part1(args, tmp, tree) -> None:
    import torch
    from space_clip_train.losses import SpaceClipLoss
    from space_clip_train.trainer import Trainer
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = tmp / "vit_b16_random"
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224)).save_pretrained(tower)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []

    def run_trainer(precision):
        config = make_config(tmp, tower, tree, device=args.device, name=f"bench_{precision}",
                             batch_size=args.batch, precision=precision)
        trainer = Trainer(config)
        batches = [b for _, b in zip(range(args.steps + 1), iter(trainer.loader), strict=False)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(lambda i: trainer._train_step(batches[i % len(batches)]), args.steps, sync)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
        return trainer, batches, seconds, peak

    trainer, batches, t_fp32, m_fp32 = run_trainer("fp32")
    # The plain loop: the same model (a copy), the same batches.
    model = copy.deepcopy(trainer.model).train()
    optimizer = torch.optim.AdamW(list(model.trainable_parameters()), lr=1e-4, weight_decay=0.01)
    loss_fn = SpaceClipLoss(0.5)
    device = trainer.proc.device

    def plain(i):
        batch = batches[i % len(batches)]
        pixels, gt = batch["pixel_values"].to(device), batch["depth"].to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(pixels, output_size=tuple(gt.shape[-2:])), gt)["loss"]
        loss.backward()
        optimizer.step()

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_plain = timed(plain, args.steps, sync)
    m_plain = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    del trainer
    _, _, t_bf16, m_bf16 = run_trainer("bf16")
    rows = [("plain fp32", t_plain, m_plain), ("trainer fp32", t_fp32, m_fp32), ("trainer bf16", t_bf16, m_bf16)]
    what = "peak CUDA MiB" if cuda else "process peak RSS MiB (cumulative)"
    print(f"\nPart 1: training step, batch {args.batch} of 352x704 crops, ViT-B/16 (random) + released decoder, "
          f"{args.device}, torch {torch.__version__}, medians of {args.steps} steps")
    print(f"{'loop':<14} {'step ms':>9} {'images/s':>9} {'ratio':>6} {what:>34}")
    for name, seconds, peak in rows:
        print(f"{name:<14} {seconds * 1000:9.1f} {args.batch / seconds:9.2f} {seconds / t_plain:6.2f} {peak:34.0f}")


def part2(args, tmp, tree) -> bool:
    import numpy as np
    import torch
    from space_clip_train.data import read_list
    from space_clip_train.kitti import read_depth_png, resolve_depth_path
    from space_clip_train.metrics import MetricAverager, evaluate_image
    from space_clip_train.trainer import Trainer
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = tmp / "small_random"
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=96, intermediate_size=192, num_hidden_layers=12,
                                     num_attention_heads=4, patch_size=16, image_size=224)).save_pretrained(tower)
    steps_per_epoch = len(read_list(tree.train_list)) // 4
    epochs = -(-args.learn_steps // steps_per_epoch)  # the cosine schedule spans the whole run
    config = make_config(tmp, tower, tree, device=args.device, name="learn", batch_size=4, epochs=epochs,
                         max_steps=args.learn_steps, eval_every=epochs, lr=args.learn_lr, scheduler="cosine_warmup",
                         model={"hidden_size": 96, "decoder_channels": [64, 32, 32, 16], "film_hidden_size": 64})
    start = time.time()
    results = Trainer(config).fit()
    minutes = (time.time() - start) / 60
    # Predicting the training set's mean depth everywhere.
    values = []
    for sample in read_list(tree.train_list):
        d = read_depth_png(resolve_depth_path(tree.gt, sample.depth))
        values.append(d[(d > 1e-3) & (d < 80)])
    mean = float(np.concatenate(values).mean())
    constant = MetricAverager()
    for sample in read_list(tree.test_list):
        gt = read_depth_png(resolve_depth_path(tree.gt, sample.depth))
        constant.update(evaluate_image(gt, np.full_like(gt, mean)))
    base = constant.result()
    print(f"\nPart 2: small random tower (hidden 96) + decoder (64, 32, 32, 16), {args.learn_steps} steps of batch 4 "
          f"(AdamW, cosine to a peak lr {args.learn_lr:g}) "
          f"on {len(read_list(tree.train_list))} synthetic frames, {minutes:.1f} min on {args.device}; "
          f"held-out drive, {base['n_images']} frames, standard protocol (Garg crop)")
    print(f"{'prediction':<26} {'AbsRel':>8} {'RMSE':>8} {'d1':>7} {'SILog':>7}")
    for name, r in ((f"mean depth {mean:.1f} m", base), ("trained decoder", results)):
        print(f"{name:<26} {r['abs_rel']:8.4f} {r['rmse']:8.3f} {r['a1']:7.3f} {r['silog']:7.2f}")
    learned = results["abs_rel"] < base["abs_rel"]
    print("the trained decoder " + ("beats" if learned else "does NOT beat") + " predicting the mean depth")
    return learned


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--learn-steps", type=int, default=200)
    parser.add_argument("--learn-lr", type=float, default=2e-3, help="peak learning rate of part 2")
    parser.add_argument("--train-frames", type=int, default=32)
    parser.add_argument("--skip", choices=("part1", "part2"), help="leave one part out")
    args = parser.parse_args()
    from kitti_tree import write_tree

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_train_bench_"))
    half = args.train_frames // 2  # drives far apart on the road, so no test frame repeats a training view
    tree = write_tree(tmp / "kitti", drives={1: half, 5: args.train_frames - half, 9: 8}, test_drive=9,
                      size=(375, 1242))
    if args.skip != "part1":
        part1(args, tmp, tree)
    if args.skip != "part2" and not part2(args, tmp, tree):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
