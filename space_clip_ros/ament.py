"""``space-clip-ament``: make a pip-installed space_clip_ros launchable with ``ros2 launch``.

A colcon build installs an ament package: a marker in ``share/ament_index/resource_index/packages/``, the launch and
config files in ``share/space_clip_ros/`` and the executables in ``lib/space_clip_ros/``, where ``launch_ros`` looks
for them. A pip install (editable or not) puts console scripts in ``bin/`` only. This command writes the ament layout
into a prefix (default: the Python environment's own, ``sys.prefix``, which the ROS 2 wheels from PyPI already use)
with executables that run this interpreter, and prints the ``AMENT_PREFIX_PATH`` line to export:

    space-clip-ament                      # then: export AMENT_PREFIX_PATH=$VIRTUAL_ENV:$AMENT_PREFIX_PATH
    ros2 launch space_clip_ros depth.launch.py checkpoint:=/path/model.pt

On a ROS 2 install, build with colcon instead; this command is not needed there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import List, Optional

PACKAGE = "space_clip_ros"
#: Executable name -> the module whose main() it runs (the same names colcon installs).
EXECUTABLES = {"depth_node": "space_clip_ros.ros.depth_node", "image_player": "space_clip_ros.ros.player"}


def _source_files() -> Path:
    """The folder holding package.xml, launch/ and config/: the source checkout (editable installs) or the
    ``share/space_clip_ros`` a wheel installed."""
    checkout = Path(__file__).resolve().parents[1]
    for candidate in (checkout, Path(sys.prefix) / "share" / PACKAGE):
        if (candidate / "package.xml").is_file() and (candidate / "launch").is_dir():
            return candidate
    raise FileNotFoundError(f"cannot find {PACKAGE}'s package.xml and launch/ (looked in {checkout} and "
                            f"{Path(sys.prefix) / 'share' / PACKAGE}); reinstall the package")


def install(prefix: Path) -> List[Path]:
    """Write the ament layout of this package into ``prefix``; returns the files written."""
    prefix = Path(prefix)
    source = _source_files()
    written = []
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    written.append(marker)
    share = prefix / "share" / PACKAGE
    if source.resolve() != share.resolve():
        share.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / "package.xml", share / "package.xml")
        written.append(share / "package.xml")
        for folder in ("launch", "config"):
            shutil.rmtree(share / folder, ignore_errors=True)
            shutil.copytree(source / folder, share / folder, ignore=shutil.ignore_patterns("__pycache__"))
            written.extend(sorted((share / folder).iterdir()))
    lib = prefix / "lib" / PACKAGE
    lib.mkdir(parents=True, exist_ok=True)
    for name, module in EXECUTABLES.items():
        path = lib / name
        path.write_text(f"#!{sys.executable}\n# Written by space-clip-ament: runs {module} with this environment's "
                        f"Python.\nimport sys\n\nfrom {module} import main\n\nsys.exit(main())\n")
        path.chmod(0o755)
        written.append(path)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="space-clip-ament", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix),
                        help="ament prefix to write into (default: this Python environment, %(default)s)")
    args = parser.parse_args(argv)
    try:
        written = install(args.prefix)
    except (OSError, FileNotFoundError) as error:
        print(f"space-clip-ament: error: {error}", file=sys.stderr)
        return 2
    prefix = args.prefix.resolve()
    print(f"wrote {len(written)} files of the ament package {PACKAGE} into {prefix}")
    paths = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if str(prefix) not in paths:
        print(f"now run:  export AMENT_PREFIX_PATH={prefix}" + (":$AMENT_PREFIX_PATH" if paths else ""))
    print(f"then:     ros2 launch {PACKAGE} depth.launch.py checkpoint:=/path/to/model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
