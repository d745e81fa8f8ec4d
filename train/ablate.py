"""Paper Table 2: train and evaluate the four decoder variants (baseline, +FiLM, +structural pathway, full).

    python train/ablate.py --data-path RAW --gt-path ANNOTATED --out runs/ablation
    python train/ablate.py --data-path RAW --gt-path ANNOTATED --variants baseline full --epochs 2

Any other train_kitti.py option (--batch-size, --epochs, --max-steps, --backbone, --set KEY=VALUE, ...) is passed to
every run. A variant whose run folder already holds a final result is not trained again unless --retrain is given.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import train_kitti
from space_clip_train.config import CONFIGS
from space_clip_train.protocols import PROTOCOLS

from space_clip_ros.model.config import ABLATION_VARIANTS

#: The paper's Table 2 AbsRel of each variant (the variants themselves: ABLATION_VARIANTS of the model's config).
PAPER_ABS_REL = {"baseline": 0.1165, "film": 0.1142, "structural": 0.1094, "full": 0.1038}
VARIANTS = {  # name: (FiLM, structural pathway, the paper's AbsRel in Table 2)
    name: (flags["use_film"], flags["use_structural_pathway"], PAPER_ABS_REL[name])
    for name, flags in ABLATION_VARIANTS.items()}


def final_results(run: Path) -> Dict[str, Dict]:
    """The run's final report: best.pt's metrics per protocol (the validation protocol first)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    finals = [r for r in records if r.get("final")]
    finals.sort(key=lambda r: not r.get("primary", False))
    out: Dict[str, Dict] = {}
    for record in finals:
        out.setdefault(record.get("protocol", "primary"), record)
    return out


def table(results: Dict[str, Dict], with_paper: bool = True) -> str:
    lines = [f"{'variant':<11} {'FiLM':>5} {'struct':>6} {'AbsRel':>8} {'SqRel':>8} {'RMSE':>8} {'d1':>7} "
             + (f"{'paper AbsRel':>12} " if with_paper else "") + f"{'images':>7}"]
    for name, result in results.items():
        film, structural, paper = VARIANTS[name]
        lines.append(f"{name:<11} {'x' if film else '-':>5} {'x' if structural else '-':>6} "
                     f"{result['abs_rel']:8.4f} {result['sq_rel']:8.4f} {result['rmse']:8.3f} {result['a1']:7.3f} "
                     + (f"{paper:12.4f} " if with_paper else "") + f"{int(result['n_images']):7d}")
    return "\n".join(lines)


TITLES = {name: PROTOCOLS[("kitti", name)].describe("Garg") for name in ("paper", "standard", "spaceclip")}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ablate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    p.add_argument("--out", type=Path, default=Path("runs/ablation"), help="one run folder per variant inside")
    p.add_argument("--retrain", action="store_true", help="train again even when a final result exists")
    args, passthrough = p.parse_known_args(argv)
    if any(a in ("--config", "--out", "--resume") for a in passthrough):
        p.error("--config, --out and --resume are chosen per variant by ablate.py")
    results = {}
    for name in args.variants:
        run = args.out / name
        if args.retrain or not final_results(run):
            print(f"=== {name}: training into {run}", flush=True)
            code = train_kitti.main(["--config", str(CONFIGS / f"ablation_{name}.yaml"), "--out", str(run),
                                     *passthrough])
            if code:
                print(f"ablate.py: error: the {name} run failed (exit {code})", file=sys.stderr)
                return code
        result = final_results(run)
        if not result:
            print(f"ablate.py: error: {run} has no final result", file=sys.stderr)
            return 2
        results[name] = result
    protocols = [p for p in TITLES if all(p in r for r in results.values())]
    tables = {p: table({n: r[p] for n, r in results.items()}, with_paper=p == "paper") for p in protocols}
    summary = "\n\n".join(f"Table 2, {p} protocol: {TITLES[p]}\n{t}" for p, t in tables.items())
    print("\n" + summary)
    (args.out / "table2.txt").write_text(summary + "\n")
    (args.out / "table2.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out / 'table2.txt'} and table2.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
