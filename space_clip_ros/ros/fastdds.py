"""Fast DDS profiles shipped with the package, and the one rule for using them (node, player, demo, launch file).

Plain Python: no rclpy, so the launch file and tools can import it before any ROS process starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, MutableMapping, Optional

_DATA = Path(__file__).resolve().parents[1] / "data"

#: The variables Fast DDS reads its XML profile from (Jazzy's name and the newer one).
PROFILE_VARIABLES = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")


def profile_path(localhost: bool = False) -> str:
    """The shipped profile: shared memory with 32 MB segments so large images and clouds arrive intact;
    ``localhost`` adds localhost-only discovery (the demo's)."""
    return str(_DATA / ("fastdds_profile_localhost.xml" if localhost else "fastdds_profile.xml"))


def user_profile(env: Optional[MutableMapping[str, str]] = None) -> Optional[str]:
    """The profile the user chose through the environment, if any."""
    env = os.environ if env is None else env
    return next((env[name] for name in PROFILE_VARIABLES if env.get(name)), None)


def profile_environment(env: Optional[MutableMapping[str, str]] = None, localhost: bool = False) -> Dict[str, str]:
    """The variables to set so a process uses the shipped profile: none when the user already chose one."""
    if user_profile(env) is not None:
        return {}
    path = profile_path(localhost)
    return {name: path for name in PROFILE_VARIABLES}


def use_shipped_profile(env: Optional[MutableMapping[str, str]] = None, localhost: bool = False) -> None:
    """Point Fast DDS at the shipped profile in ``env`` (default this process) unless the user chose one."""
    env = os.environ if env is None else env
    env.update(profile_environment(env, localhost))


def main() -> int:
    """``python -m space_clip_ros.ros.fastdds``: the export lines that make another process (a camera driver started
    outside depth.launch.py) use the shipped profile, so its large frames go through 32 MB shared-memory segments."""
    for name in PROFILE_VARIABLES:
        print(f"export {name}={profile_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
