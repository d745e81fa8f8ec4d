#!/usr/bin/env bash
# Wheels the GPU machine lacks, for Python 3.12, into .whl/ (git-ignored), to carry with a device call:
#   bash benchmarks/device_wheels.sh && run(command="bash benchmarks/device_check.sh", carry=[".whl"], ...)
# The GPU image has torch, transformers, onnx, onnxruntime, numpy, opencv and pytest, but no ROS: this fetches the
# Jazzy rclpy stack of the `ros` extra (ros-* wheels and the few pure-Python packages they need).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl /tmp/space_clip_device_wheels && mkdir -p .whl /tmp/space_clip_device_wheels
# empy is published as a source distribution only: build its (pure-Python) wheel first, so the download resolves.
python3 -m pip wheel -q --no-deps -w /tmp/space_clip_device_wheels 'empy>=4,<5'
python3 -m pip download --find-links /tmp/space_clip_device_wheels -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_39_x86_64 --platform manylinux_2_35_x86_64 --platform manylinux_2_34_x86_64 \
  --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any \
  -d /tmp/space_clip_device_wheels \
  'ros-jazzy-rclpy[fastrtps]==7.1.6' ros-jazzy-sensor-msgs ros-jazzy-std-msgs ros-jazzy-diagnostic-msgs \
  ros-jazzy-ament-index-python
# Keep the ROS wheels and the pure-Python helpers the GPU image does not have; drop what it already has.
for wheel in /tmp/space_clip_device_wheels/*.whl; do
  case "$(basename "$wheel" | tr 'A-Z' 'a-z')" in
    ros_*|empy*|catkin_pkg*|lark*|docutils*|distlib*) cp "$wheel" .whl/ ;;
  esac
done
du -sh .whl && ls .whl | wc -l
