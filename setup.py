"""space_clip_ros: an ament_python package that also installs with pip (ROS 2 Jazzy wheels as the `ros` extra)."""

import ast
import re
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "space_clip_ros"
VERSION = re.search(r'__version__ = "([^"]+)"', open(f"{PACKAGE}/version.py", encoding="utf-8").read()).group(1)
#: The ROS executables (lib/space_clip_ros/<name> for ros2 run / launch): written once, in space_clip_ros/ament.py.
ROS_EXECUTABLES = ast.literal_eval(re.search(r"^EXECUTABLES = (\{.*?\})$", open(f"{PACKAGE}/ament.py", encoding="utf-8")
                                             .read(), re.M | re.S).group(1))
TRAIN = ["pillow>=10", "tensorboard>=2.14", "tqdm>=4.60"]
ONNX = ["onnx>=1.16", "onnxscript>=0.2"]

setup(
    name=PACKAGE,
    version=VERSION,
    description="Metric depth from one camera with SPACE-CLIP (frozen CLIP + dual-pathway decoder) for ROS 2",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # space_clip_train (train/'s library) is installed too: space-clip-datasets and its split lists live there.
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]) + ["space_clip_train"],
    package_dir={"space_clip_train": "train/space_clip_train"},
    package_data={PACKAGE: ["data/*", "data/**/*"], "space_clip_train": ["splits/*.txt"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*")),
    ],
    zip_safe=False,
    install_requires=[
        "numpy>=1.24",
        "torch>=2.4",
        "transformers>=4.45",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "setuptools",
    ],
    extras_require={
        # Real ROS 2 (rclpy over Fast DDS) from PyPI, for machines without a ROS install. Jazzy: Python 3.10-3.13.
        "ros": [
            "ros-jazzy-rclpy[fastrtps]==7.1.6",
            "ros-jazzy-sensor-msgs",
            "ros-jazzy-std-msgs",
            "ros-jazzy-diagnostic-msgs",
            "ros-jazzy-ament-index-python",
            "rosbags>=0.10",  # rosbag2 recordings (mcap, sqlite3) for space-clip-player / space-clip-record
        ],
        # rosbag2 recordings without a rosbag2 install (space-clip-player source:=BAG, space-clip-record).
        "bags": ["rosbags>=0.10"],
        # ONNX export (space-clip-export) and the onnxruntime CPU backend.
        "onnx": ONNX + ["onnxruntime>=1.18"],
        # The openvino CPU backend (the fastest CPU backend measured; backend "auto" picks it when installed).
        "openvino": ONNX + ["openvino>=2024.4"],
        # train/: KITTI training and evaluation (python train/train_kitti.py).
        "train": TRAIN,
        "test": TRAIN + ONNX + ["onnxruntime>=1.18", "openvino>=2024.4", "rosbags>=0.10"] + [
            "pytest>=7,<9",  # launch_testing's pytest plugin (ROS 2 Jazzy) does not load under pytest 9
            "ruff>=0.4",
            "colcon-core",
            "colcon-ros",
            "colcon-python-setup-py",
        ],
    },
    entry_points={
        "console_scripts": [
            "space-clip-ament = space_clip_ros.ament:main",
            "space-clip-convert = space_clip_ros.convert:main",
            "space-clip-datasets = space_clip_train.download:main",
            "space-clip-bag2dataset = space_clip_ros.ros.bag2dataset:main",
            "space-clip-depth = space_clip_ros.cli:main",
            "space-clip-export = space_clip_ros.export:main",
            "space-clip-demo = space_clip_ros.ros.demo:main",
            "space-clip-player = space_clip_ros.ros.player:main",
            "space-clip-record = space_clip_ros.ros.recorder:main",
        ] + [f"{name} = {module}:main" for name, module in ROS_EXECUTABLES.items()],
    },
)
