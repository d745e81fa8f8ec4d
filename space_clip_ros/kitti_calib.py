"""Reading KITTI calibration files (calib_cam_to_cam.txt, calib_velo_to_cam.txt); ROS-free."""

from pathlib import Path
from typing import Dict, Union

import numpy as np


def read_kitti_calib(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    """A KITTI calibration file as {key: float64 array}; entries that are not numbers (calib_time) are left out."""
    values = {}
    for line in Path(path).read_text().splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()], dtype=np.float64)
        except ValueError:
            continue
    return values
