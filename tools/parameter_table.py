"""The node's parameter table in docs/node.md, made from the one place parameters are written
(space_clip_ros/node/settings.py, SPECS). test/test_parameters_table.py fails when the file and the table differ.

    python tools/parameter_table.py            # print the table
    python tools/parameter_table.py --write    # rewrite it in docs/node.md, between its markers
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from space_clip_ros.node.settings import CHANGES, SPECS  # noqa: E402

BEGIN = "<!-- parameters: made by tools/parameter_table.py from space_clip_ros/node/settings.py; do not edit -->"
END = "<!-- end of parameters -->"
DOC = ROOT / "docs" / "node.md"
SHORT = {"runtime": "run time", "reload": "cleanup / configure (model)", "topics": "cleanup / configure (topics)",
         "resubscribe": "deactivate / activate", "startup": "start only"}


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return "inf" if math.isinf(value) else f"{value:g}"


def _default(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value == "" else value
    if isinstance(value, list):
        return "[]"
    return _number(value) if isinstance(value, float) else str(value)


def table() -> str:
    lines = [BEGIN, "", "| parameter | default | range / choices | a change takes effect | meaning |",
             "|---|---|---|---|---|"]
    for spec in SPECS:
        if spec.choices:
            allowed = ", ".join(f'"{c}"' if c == "" else c for c in spec.choices)
        elif spec.low is not None:
            allowed = f"{_number(spec.low)} .. {_number(spec.high)}"
        else:
            allowed = ""
        meaning = spec.description.replace("|", "\\|")
        lines.append(f"| `{spec.name}` | {_default(spec.default)} | {allowed} | {SHORT[spec.change]} | {meaning} |")
    lines += ["", "When a change takes effect: " + "; ".join(f"{SHORT[k]}: {v}" for k, v in CHANGES.items()) + ".",
              "", END]
    return "\n".join(lines)


def replaced(text: str) -> str:
    """``text`` with the part between the markers made anew."""
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + table() + text[end:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the table in docs/node.md")
    args = parser.parse_args()
    if not args.write:
        print(table())
        return 0
    DOC.write_text(replaced(DOC.read_text()))
    print(f"wrote the parameter table into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
