"""Check package.xml's dependency keys against ros/rosdistro and write the result to test/data/rosdep_keys.json.

    python tools/derive_rosdep_keys.py PATH/TO/rosdistro [--out test/data/rosdep_keys.json]

PATH/TO/rosdistro is a checkout of github.com/ros/rosdistro. A key resolves on a distribution when it is a ROS
package released in ``<distro>/distribution.yaml`` or a rosdep key of ``rosdep/*.yaml`` with a rule for Ubuntu's
release of that distribution (Humble: jammy, Jazzy: noble), apt or pip. test/test_launch_and_package.py reads the
file: every key of package.xml must be in it and resolve on both. Run this again after changing package.xml.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Set

import yaml

ROOT = Path(__file__).resolve().parents[1]
DISTROS = {"humble": "jammy", "jazzy": "noble"}
DEPENDS = ("depend", "exec_depend", "build_depend", "buildtool_depend", "test_depend", "build_export_depend")


def package_keys(package_xml: Path) -> Set[str]:
    root = ET.parse(package_xml).getroot()
    return {e.text.strip() for tag in DEPENDS for e in root.findall(tag) if e.text}


def released_packages(rosdistro: Path, distro: str) -> Set[str]:
    data = yaml.safe_load((rosdistro / distro / "distribution.yaml").read_text())
    names = set()
    for repo, entry in (data.get("repositories") or {}).items():
        release = (entry or {}).get("release")
        if release:
            names.update(release.get("packages") or [repo])
    return names


def ubuntu_rule(rule, codename: str) -> bool:
    """Whether a rosdep rule installs something on Ubuntu ``codename``."""
    if rule is None:
        return False
    ubuntu = rule.get("ubuntu") if isinstance(rule, dict) else None
    if ubuntu is None:
        return False
    if isinstance(ubuntu, list):
        return bool(ubuntu)
    if isinstance(ubuntu, dict):
        if "pip" in ubuntu or "apt" in ubuntu or "packages" in ubuntu:
            return True
        value = ubuntu.get(codename, ubuntu.get("*"))
        if isinstance(value, dict):
            return bool(value)
        return bool(value)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rosdistro", type=Path, help="a checkout of github.com/ros/rosdistro")
    parser.add_argument("--out", type=Path, default=ROOT / "test" / "data" / "rosdep_keys.json")
    args = parser.parse_args()
    rules: Dict = {}
    for name in ("base.yaml", "python.yaml"):
        rules.update(yaml.safe_load((args.rosdistro / "rosdep" / name).read_text()))
    try:
        commit = subprocess.run(["git", "-C", str(args.rosdistro), "rev-parse", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    keys = sorted(package_keys(ROOT / "package.xml"))
    result = {"rosdistro_commit": commit, "distros": {}}
    for distro, codename in DISTROS.items():
        packages = released_packages(args.rosdistro, distro)
        result["distros"][distro] = {
            "ubuntu": codename,
            "keys": {key: ("ros package" if key in packages else "rosdep key" if ubuntu_rule(rules.get(key), codename)
                           else "unresolved") for key in keys},
        }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    bad = [(d, k) for d, v in result["distros"].items() for k, how in v["keys"].items() if how == "unresolved"]
    print(f"wrote {args.out} (rosdistro {commit[:12]}): {len(keys)} keys" + (f"; UNRESOLVED: {bad}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
