"""The ament_python skeleton, the launch file and the parameter defaults a ROS 2 user relies on."""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_config_yaml_holds_exactly_the_declared_defaults():
    pytest.importorskip("rclpy")
    from space_clip_ros.ros.depth_node import PARAMETERS

    values = yaml.safe_load((ROOT / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"]
    assert values == PARAMETERS


def test_nav2_example_names_only_topics_and_types_the_node_publishes():
    """config/nav2_costmap_example.yaml: every observation source is a topic of the node (namespace camera) with
    the type the node publishes there; the scan clears with +Inf; the cloud keeps the floor out."""
    pytest.importorskip("rclpy")
    from space_clip_ros.ros.output_messages import OUTPUTS

    published = {f"/camera/{topic}": msg_type.__name__ for _, msg_type, topic in OUTPUTS}
    costmap = yaml.safe_load((ROOT / "config" / "nav2_costmap_example.yaml").read_text())
    params = costmap["local_costmap"]["local_costmap"]["ros__parameters"]
    sources = {}
    for plugin in params["plugins"]:
        layer = params[plugin]
        for name in layer.get("observation_sources", "").split():
            sources[name] = (layer["plugin"], layer[name])
    assert {s["topic"] for _, s in sources.values()} == {"/camera/depth/scan", "/camera/depth/points_filtered"}
    for plugin, source in sources.values():
        assert published[source["topic"]] == source["data_type"], source
        assert source["raytrace_max_range"] > source["obstacle_max_range"]  # clears beyond what it marks
        if source["data_type"] == "LaserScan":
            assert source["inf_is_valid"] is True and plugin == "nav2_costmap_2d::ObstacleLayer"
        else:
            assert source["min_obstacle_height"] > 0 and plugin == "nav2_costmap_2d::VoxelLayer"


def test_package_xml_is_format_3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3" and root.findtext("name") == "space_clip_ros"
    from space_clip_ros import __version__

    assert root.findtext("version") == __version__  # space_clip_ros/version.py is the one place it is written
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
                        "backend", "cameras", "camera_launch"}
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


def _ros2_cli():
    """The ros2 command of this environment (a ROS 2 install, or the Jazzy wheels of ../shared in a venv)."""
    import importlib.util
    import os
    import shutil
    import sys

    if os.environ.get("SPACE_CLIP_REQUIRE_LAUNCH") and importlib.util.find_spec("launch_ros") is None:
        pytest.fail("SPACE_CLIP_REQUIRE_LAUNCH is set (.ci/run installed the launch stack) but launch_ros is missing")
    pytest.importorskip("launch_ros", reason="the ROS 2 launch stack is not installed: on a robot it comes with ROS 2; "
                        "here .ci/run installs the Jazzy wheels of ../shared/ros2_launch_jazzy when present")
    ros2 = shutil.which("ros2", path=str(Path(sys.executable).parent)) or shutil.which("ros2")
    if ros2 is None:
        pytest.skip("launch_ros is installed but the ros2 command is not")
    return ros2


def launch_and_check(ros, ros2, prefix, checkpoint, tmp_path):
    """``ros2 launch space_clip_ros depth.launch.py`` from the ament ``prefix`` with a checkpoint, a namespace,
    remapped input topics and a params file; frames published on the remapped topics come back as depth on the
    namespaced outputs, shaped by the params file; Ctrl-C (SIGINT to the process group) ends everything."""
    import os
    import signal
    import subprocess

    from ros_harness import Harness, camera_info_msg, rgb_image_msg
    from sensor_msgs.msg import CameraInfo, Image

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "output_size": "80x24", "publish_colored": False, "publish_points": False, "max_depth": 60.0}}}))
    env = {**ros, "AMENT_PREFIX_PATH": os.pathsep.join(
        [str(prefix)] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p])}
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen(
        [ros2, "launch", "space_clip_ros", "depth.launch.py", f"checkpoint:={checkpoint}", "namespace:=launched",
         "image:=/drive/image_rect", "camera_info:=/drive/info", f"params_file:={params}", "device:=cpu",
         "backend:=eager"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    h = Harness("/launched")
    try:
        qos = h._qos
        h.image_pub = h.node.create_publisher(Image, "/drive/image_rect", qos)
        h.info_pub = h.node.create_publisher(CameraInfo, "/drive/info", qos)
        h.subscribe_outputs(("depth", "info"))
        h.wait_for_node(timeout=120)
        rgb = np.random.default_rng(0).integers(0, 256, (48, 160, 3), dtype=np.uint8)
        for i in range(20):
            stamp = h.stamp(i)
            h.info_pub.publish(camera_info_msg(stamp, 160, 48))
            h.image_pub.publish(rgb_image_msg(rgb, stamp))
            try:
                h.spin_until(lambda: h.received["depth"], 3.0, "depth")
                break
            except AssertionError:
                continue
        h.spin_until(lambda: h.received["depth"], 30.0, "depth from the launched node")
        depth = h.received["depth"][0]
        assert (depth.width, depth.height, depth.encoding) == (80, 24, "32FC1")  # output_size from the file
        assert depth.header.frame_id == "cam_optical"
        assert proc.poll() is None
    finally:
        h.destroy()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        log.close()
    text = (tmp_path / "launch.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "process has finished cleanly" in text or "depth_node" in text, text[-3000:]


def test_ros2_launch_runs_a_pip_install(ros, checkpoint, tmp_path):
    """A pip install made launchable with space-clip-ament (executables in lib/space_clip_ros, the ament marker),
    started as robots start it: ros2 launch space_clip_ros depth.launch.py ..."""
    from space_clip_ros import ament

    ros2 = _ros2_cli()
    prefix = tmp_path / "prefix"
    assert ament.main(["--prefix", str(prefix)]) == 0
    for name in ("depth_node", "image_player"):
        assert (prefix / "lib" / "space_clip_ros" / name).stat().st_mode & 0o111
    assert (prefix / "share" / "space_clip_ros" / "launch" / "depth.launch.py").is_file()
    launch_and_check(ros, ros2, prefix, checkpoint, tmp_path)


def test_ros2_launch_starts_the_camera_driver_with_the_shipped_profile(ros, checkpoint, tmp_path):
    """camera_launch:=DRIVER.launch.py starts the driver from our launch file, with the shipped Fast DDS profile in
    its environment (a stock driver started elsewhere would not have it)."""
    import os
    import signal
    import subprocess
    import time

    from space_clip_ros import ament
    from space_clip_ros.ros import fastdds

    ros2 = _ros2_cli()
    prefix = tmp_path / "prefix"
    assert ament.main(["--prefix", str(prefix)]) == 0
    seen = tmp_path / "driver_env.txt"
    driver = tmp_path / "driver.launch.py"
    driver.write_text(
        "import sys\nfrom launch import LaunchDescription\nfrom launch.actions import ExecuteProcess\n\n\n"
        "def generate_launch_description():\n"
        "    code = \"import os; open(%r, 'w').write(os.environ.get('FASTRTPS_DEFAULT_PROFILES_FILE', 'unset'))\"\n"
        f"    return LaunchDescription([ExecuteProcess(cmd=[sys.executable, '-c', code % {str(seen)!r}])])\n")
    env = {k: v for k, v in ros.items() if k not in fastdds.PROFILE_VARIABLES}  # as on a robot: none set
    env["AMENT_PREFIX_PATH"] = str(prefix)
    log = open(tmp_path / "launch.log", "w")
    proc = subprocess.Popen([ros2, "launch", "space_clip_ros", "depth.launch.py", f"checkpoint:={checkpoint}",
                             "device:=cpu", "backend:=eager", f"camera_launch:={driver}", "namespace:=with_driver"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (seen.is_file() and "active:" in (tmp_path / "launch.log").read_text()):
            time.sleep(0.2)
        assert seen.read_text() == fastdds.profile_path()
        assert "active:" in (tmp_path / "launch.log").read_text() and proc.poll() is None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == 0, (tmp_path / "launch.log").read_text()[-3000:]


def _launched_parameters(ros, ros2, prefix, tmp_path, name, arguments, names):
    """``ros2 launch space_clip_ros depth.launch.py ARGUMENTS`` in namespace ``name``; the node's ``names``
    parameters as its get_parameters service answers, once it is active; then Ctrl-C."""
    import os
    import signal
    import subprocess
    import time

    from rcl_interfaces.srv import GetParameters
    from ros_harness import Harness

    env = {**ros, "AMENT_PREFIX_PATH": str(prefix)}
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([ros2, "launch", "space_clip_ros", "depth.launch.py", f"namespace:={name}", *arguments],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    h = Harness(f"/{name}")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not any(
                word in log_path.read_text() for word in ("active:", "configure failed")):
            time.sleep(0.2)
        assert "active:" in log_path.read_text(), log_path.read_text()[-3000:]
        client = h.node.create_client(GetParameters, f"/{name}/depth_node/get_parameters")
        reply = h.call(client, GetParameters.Request(names=list(names)), "get_parameters")
        values = {}
        for key, value in zip(names, reply.values, strict=True):
            values[key] = list(value.string_array_value) if value.type == 9 else value.string_value
    finally:
        h.destroy()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)
        log.close()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    return values


def test_a_params_file_stands_and_arguments_given_on_the_command_line_win(ros, checkpoint, tmp_path):
    """A user's params file with checkpoint, device, backend and cameras starts the node with exactly those values
    (the launch file's own arguments, not given, change nothing); the same file with some of them given on the
    command line: those win, the others stay the file's. Read back through the node's parameter service."""
    import shutil

    from space_clip_ros import ament

    ros2 = _ros2_cli()
    prefix = tmp_path / "prefix"
    assert ament.main(["--prefix", str(prefix)]) == 0
    other = tmp_path / "other.pt"
    shutil.copy(checkpoint, other)
    params = tmp_path / "my_depth.yaml"
    params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {
        "checkpoint": str(checkpoint), "device": "cpu", "backend": "eager", "cameras": ["front", "left"]}}}))
    names = ("checkpoint", "device", "backend", "cameras")
    from_file = _launched_parameters(ros, ros2, prefix, tmp_path, "from_file", [f"params_file:={params}"], names)
    assert from_file == {"checkpoint": str(checkpoint), "device": "cpu", "backend": "eager",
                         "cameras": ["front", "left"]}
    given = _launched_parameters(ros, ros2, prefix, tmp_path, "given",
                                 [f"params_file:={params}", f"checkpoint:={other}", "cameras:=[rear]"], names)
    assert given == {"checkpoint": str(other), "device": "cpu", "backend": "eager", "cameras": ["rear"]}


def test_colcon_build_installs_what_ros2_looks_for(tmp_path, request):
    """colcon (from PyPI) builds the package; ros2 run/launch then find the executables, launch file and config, and
    (where the launch stack is installed) ros2 launch starts the node from the colcon install."""
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
    lists = list(prefix.glob("lib/python3*/site-packages/space_clip_train/splits/eigen_test_files_with_gt.txt"))
    assert lists and len(lists[0].read_text().splitlines()) == 697, "space-clip-datasets' split lists not installed"
    import importlib.util

    if importlib.util.find_spec("launch_ros") and importlib.util.find_spec("rclpy"):
        ros, checkpoint = request.getfixturevalue("ros"), request.getfixturevalue("checkpoint")
        launch_and_check(ros, _ros2_cli(), prefix, checkpoint, tmp_path)


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
