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
sys.path[:0] = [str(ROOT / "train"), str(ROOT / "test"), str(ROOT), str(ROOT / "benchmarks")]
import check_io  # noqa: E402

#: Part 1's target on a GPU (issue 25): the trainer in bf16 at least this many times the plain fp32 loop's images/s,
#: and at most this much CUDA memory at batch 64 (the authors' code: 237 img/s, 17.7 GiB fp32 on an H100).
TARGET_SPEEDUP, TARGET_GIB = 2.0, 9.0


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


def part1(args, tmp, tree) -> dict:
    import torch
    from space_clip_train.losses import SpaceClipLoss
    from space_clip_train.trainer import Trainer
    from transformers import CLIPVisionConfig, CLIPVisionModel

    tower = tmp / "vit_b16_random"
    torch.manual_seed(0)
    CLIPVisionModel(CLIPVisionConfig(patch_size=16, image_size=224)).save_pretrained(tower)
    cuda = args.device.startswith("cuda") and not args.dry_run
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows = []

    def run_trainer(precision):
        config = make_config(tmp, tower, tree, device=check_io.device_for(args), name=f"bench_{precision}",
                             batch_size=args.batch, precision=precision)
        trainer = Trainer(config)
        if args.dry_run:
            return trainer, [], 0.0, 0.0
        batches = [b for _, b in zip(range(args.steps + 1), iter(trainer.loader), strict=False)]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        seconds = timed(lambda i: trainer._train_step(batches[i % len(batches)]), args.steps, sync)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
        return trainer, batches, seconds, peak

    trainer, batches, t_fp32, m_fp32 = run_trainer("fp32")
    if args.dry_run:
        print(f"part 1 set up: {len(trainer.train_set)} training lines, batch {args.batch}, {args.steps} steps")
        return {}
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
    print(f"| loop | step ms | images/s | x plain fp32 images/s | {what} |")
    print("|---|---|---|---|---|")
    for name, seconds, peak in rows:
        print(f"| {name} | {seconds * 1000:.1f} | {args.batch / seconds:.2f} | {t_plain / seconds:.2f} | {peak:.0f} |")
    speedup = t_plain / t_bf16
    if cuda:
        verdict = "meets" if speedup >= TARGET_SPEEDUP and m_bf16 / 1024 <= TARGET_GIB else "misses"
        print(f"trainer bf16: {speedup:.2f}x the plain fp32 loop, {m_bf16 / 1024:.1f} GiB: {verdict} the target "
              f"(>= {TARGET_SPEEDUP}x, <= {TARGET_GIB} GiB at batch 64)")
    return {"batch": args.batch, "speedup_bf16": speedup, "peak_mib_bf16": m_bf16,
            "rows": [{"loop": n, "step_ms": s * 1000, "img_s": args.batch / s, "peak_mib": p} for n, s, p in rows]}


def part2(args, tmp, tree) -> dict:
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
    config = make_config(tmp, tower, tree, device=check_io.device_for(args), name="learn", batch_size=4,
                         epochs=epochs, max_steps=args.learn_steps, eval_every=epochs, lr=args.learn_lr,
                         scheduler="cosine_warmup",
                         model={"hidden_size": 96, "decoder_channels": [64, 32, 32, 16], "film_hidden_size": 64})
    if args.dry_run:
        trainer = Trainer(config)
        print(f"part 2 set up: {len(trainer.train_set)} training lines, {args.learn_steps} steps of batch 4")
        return {}
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
    print("| prediction | AbsRel | RMSE | d1 | SILog |")
    print("|---|---|---|---|---|")
    for name, r in ((f"mean depth {mean:.1f} m", base), ("trained decoder", results)):
        print(f"| {name} | {r['abs_rel']:.4f} | {r['rmse']:.3f} | {r['a1']:.3f} | {r['silog']:.2f} |")
    learned = results["abs_rel"] < base["abs_rel"]
    print("the trained decoder " + ("beats" if learned else "does NOT beat") + " predicting the mean depth")
    return {"learned": learned, "abs_rel": results["abs_rel"], "abs_rel_mean_depth": base["abs_rel"],
            "minutes": minutes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--learn-steps", type=int, default=200)
    parser.add_argument("--learn-lr", type=float, default=2e-3, help="peak learning rate of part 2")
    parser.add_argument("--train-frames", type=int, default=None,
                        help="synthetic training frames (default: 32, or one batch when --batch is larger)")
    parser.add_argument("--skip", choices=("part1", "part2"), help="leave one part out")
    check_io.add_arguments(parser)
    args = parser.parse_args()
    if args.batch < 1 or args.steps < 1 or args.learn_steps < 1:
        parser.error("--batch, --steps and --learn-steps must be positive")
    frames = args.train_frames or max(32, args.batch)
    if args.skip != "part1" and frames < args.batch:
        parser.error(f"--train-frames {frames} is fewer than one batch of {args.batch}")
    from kitti_tree import write_tree

    tmp = Path(tempfile.mkdtemp(prefix="space_clip_train_bench_"))
    half = frames // 2  # drives far apart on the road, so no test frame repeats a training view
    start = time.time()
    tree = write_tree(tmp / "kitti", drives={1: half, 5: frames - half, 9: 8}, test_drive=9, size=(375, 1242))
    print(f"synthetic KITTI tree: {frames} training frames + 8 held-out, written in {time.time() - start:.1f} s",
          flush=True)
    one = part1(args, tmp, tree) if args.skip != "part1" else {}
    two = part2(args, tmp, tree) if args.skip != "part2" else {}
    if args.dry_run:
        return check_io.dry_run_done(args, f"training at batch {args.batch} on {args.device} ({frames} frames), "
                                     f"then {args.learn_steps} learning steps")
    parts = []
    if one:
        parts.append(f"bf16 {one['rows'][2]['img_s']:.0f} img/s = {one['speedup_bf16']:.2f}x plain fp32, "
                     f"{one['peak_mib_bf16'] / 1024:.1f} GiB at batch {args.batch}")
    if two:
        parts.append(f"learns: AbsRel {two['abs_rel']:.3f} vs mean depth {two['abs_rel_mean_depth']:.3f}"
                     if two["learned"] else "does NOT learn")
    check_io.write(args, "; ".join(parts), part1=one, part2=two)
    return 0 if not two or two["learned"] else 1


if __name__ == "__main__":
    sys.exit(main())
