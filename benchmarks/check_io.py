"""What every benchmark shares with the GPU check (benchmarks/device_check.py): ``--dry-run`` and ``--json``.

``--dry-run`` runs a benchmark as far as it goes without the device it was asked for: arguments parsed and checked,
data written, models and configurations built on the CPU; then it stops with one line saying what it would measure.
CI runs the whole check that way (test/test_device_check.py), so a wrong argument fails there and not in a short GPU
slot. ``--json PATH`` writes the numbers and a one-line ``headline`` that the check puts in its summary table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="check arguments and set up data without the device, measure nothing")
    parser.add_argument("--json", type=Path, help="write the results (and a one-line headline) as JSON")


def parser_for(doc: str, repeats: int) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first paragraph, ``--device``, ``--repeats`` and the arguments above."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=repeats)
    add_arguments(parser)
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The arguments, ``--repeats`` checked."""
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be positive")
    return args


def device_for(args: argparse.Namespace, name: str = "device") -> str:
    """The device to build things on: ``cpu`` in a dry run (nothing is measured), else what was asked for."""
    return "cpu" if getattr(args, "dry_run", False) else getattr(args, name)


def dry_run_done(args: argparse.Namespace, what: str, **data: Any) -> int:
    """End a dry run: say what the real run would measure, write the JSON (``dry_run`` true) and return 0."""
    print(f"dry run: ok; a real run measures {what}", flush=True)
    write(args, f"dry run: {what}", dry_run=True, **data)
    return 0


def write(args: argparse.Namespace, headline: str, **data: Any) -> Optional[Path]:
    """Write ``{"headline": ..., **data}`` to ``--json`` when given."""
    path = getattr(args, "json", None)
    if path is None:
        return None
    record: Dict[str, Any] = {"headline": headline, **data}
    Path(path).write_text(json.dumps(record, indent=2, default=str))
    return Path(path)
