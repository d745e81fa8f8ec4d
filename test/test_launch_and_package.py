"""The ament_python skeleton, the launch file and the parameter defaults a ROS 2 user relies on."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_config_yaml_holds_exactly_the_declared_defaults():
    pytest.importorskip("rclpy")
    from space_clip_ros.ros.depth_node import PARAMETERS

    values = yaml.safe_load((ROOT / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"]
    assert values == PARAMETERS


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "space_clip_ros"
    assert root.find("export/build_type").text == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {"rclpy", "sensor_msgs", "std_msgs", "diagnostic_msgs", "python3-numpy", "python3-opencv",
            "python3-torch"} <= exec_deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}
    assert (ROOT / "resource" / "space_clip_ros").is_file()
    assert "script_dir=$base/lib/space_clip_ros" in (ROOT / "setup.cfg").read_text()


def test_launch_file_declares_the_documented_arguments():
    tree = ast.parse((ROOT / "launch" / "depth.launch.py").read_text())
    declared = {node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert declared == {"namespace", "image", "camera_info", "params_file", "checkpoint", "device",
                        "backend", "cameras"}
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def test_launch_file_runs_under_ros2_launch():
    """The launch_testing check a ROS 2 install runs under colcon test; launch is not on PyPI."""
    launch_testing = pytest.importorskip(
        "launch_testing", reason="launch_testing is not on PyPI: this runs on a real ROS 2 install (colcon test)")
    from launch import LaunchService

    import importlib.util

    spec = importlib.util.spec_from_file_location("depth_launch", ROOT / "launch" / "depth.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert launch_testing is not None and description.entities
    service = LaunchService()
    service.include_launch_description(description)


def test_colcon_build_installs_what_ros2_looks_for(tmp_path):
    """colcon (from PyPI) builds the package; ros2 run/launch then find the executables, launch file and config."""
    import shutil
    import subprocess
    import sys

    colcon = shutil.which("colcon", path=str(Path(sys.executable).parent)) or shutil.which("colcon")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install -e '.[test]')")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if files.returncode != 0:
        pytest.skip("not a git checkout")
    source = tmp_path / "src" / "space_clip_ros"
    for name in files.stdout.split():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    build = subprocess.run([colcon, "build", "--base-paths", "src"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    prefix = tmp_path / "install" / "space_clip_ros"
    for relative in ("share/ament_index/resource_index/packages/space_clip_ros", "share/space_clip_ros/package.xml",
                     "share/space_clip_ros/launch/depth.launch.py", "share/space_clip_ros/config/depth.yaml",
                     "lib/space_clip_ros/depth_node", "lib/space_clip_ros/image_player"):
        assert (prefix / relative).exists(), relative
    data = list(prefix.glob("lib/python3*/site-packages/space_clip_ros/data/fastdds_profile.xml"))
    assert data, "the Fast DDS profile is not installed with the package"


def test_every_dependency_key_resolves_on_humble_and_jazzy():
    """rosdep install --from-paths must succeed: every key of package.xml is a released ROS package or a rosdep key
    with an Ubuntu rule, per the list tools/derive_rosdep_keys.py derived from ros/rosdistro (commit in the file)."""
    import json
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from derive_rosdep_keys import package_keys

    data = json.loads((ROOT / "test" / "data" / "rosdep_keys.json").read_text())
    keys = package_keys(ROOT / "package.xml")
    for distro in ("humble", "jazzy"):
        listed = data["distros"][distro]["keys"]
        assert set(listed) == keys, "package.xml changed: run python tools/derive_rosdep_keys.py PATH/TO/rosdistro"
        assert {k: v for k, v in listed.items() if v == "unresolved"} == {}, distro


def test_rosdep_derivation_tells_resolvable_keys_from_others(tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    from derive_rosdep_keys import released_packages, ubuntu_rule

    (tmp_path / "jazzy").mkdir()
    (tmp_path / "jazzy" / "distribution.yaml").write_text(yaml.safe_dump({"repositories": {
        "rclpy": {"release": {"packages": ["rclpy"]}}, "launch": {"release": {"packages": ["launch", "launch_xml"]}},
        "sensor_msgs": {"release": {"version": "5.3.6-1"}}, "unreleased": {"source": {}}}}))
    assert released_packages(tmp_path, "jazzy") == {"rclpy", "launch", "launch_xml", "sensor_msgs"}
    assert "rclpy_lifecycle" not in released_packages(tmp_path, "jazzy")
    assert ubuntu_rule({"ubuntu": {"pip": {"packages": ["transformers"]}}}, "noble")
    assert ubuntu_rule({"ubuntu": {"*": ["python3-torch"], "focal": None}}, "jammy")
    assert not ubuntu_rule({"ubuntu": {"*": ["python3-torch"], "focal": None}}, "focal")
    assert not ubuntu_rule({"debian": ["x"]}, "noble") and not ubuntu_rule(None, "noble")
