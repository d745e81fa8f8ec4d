"""ros2 launch space_clip_ros depth.launch.py checkpoint:=/path/space_clip.pt [namespace:=camera] [device:=cuda]
[backend:=auto] [cameras:=[front,left]] [params_file:=my_depth.yaml] [camera_launch:=/path/to/driver.launch.py]

Starts depth_node (configured and activated at start) with config/depth.yaml or ``params_file``, remapping its
relative topics to the camera's. checkpoint, device, backend and cameras override the params file only when given on
the command line; not given, the file's values stand (and the node's defaults where the file has none).

Fast DDS uses the package's shared-memory profile unless FASTRTPS_DEFAULT_PROFILES_FILE or
FASTDDS_DEFAULT_PROFILES_FILE is already set; every process this launch file starts gets it, the camera driver that
camera_launch names included (a stock driver started elsewhere cannot put a large frame in its 512 KB shared-memory
segment, and a best-effort one then loses frames: see README, "QoS and frames that arrive").
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description_sources import AnyLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription
from space_clip_ros.ros import fastdds

#: Launch arguments that set a node parameter of the same name, only when given (not empty).
OVERRIDES = ("checkpoint", "device", "backend", "cameras")


def _depth_node(context):
    """depth_node with the params file, then the OVERRIDES given on the command line (as substitutions, so launch_ros
    reads ``[front,left]`` as a list); an argument not given leaves the file's value."""
    given = {name: LaunchConfiguration(name) for name in OVERRIDES if LaunchConfiguration(name).perform(context)}
    return [Node(
        package="space_clip_ros",
        executable="depth_node",
        name="depth_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file")] + ([given] if given else []),
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
                    ("camera_info", LaunchConfiguration("camera_info"))],
    )]


def generate_launch_description():
    share = get_package_share_directory("space_clip_ros")
    actions = [
        DeclareLaunchArgument("namespace", default_value="camera", description="namespace of node and topics"),
        DeclareLaunchArgument("image", default_value="image_rect_color", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="input camera_info topic"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "depth.yaml")),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="space_clip_ros checkpoint (.pt); not given: the params file's"),
        DeclareLaunchArgument("device", default_value="",
                              description="auto | cpu | cuda | cuda:N; not given: the params file's (default auto)"),
        DeclareLaunchArgument("backend", default_value="",
                              description="auto | eager | compile | cudagraph | openvino | onnxruntime; not given: "
                                          "the params file's (default auto)"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="[front,left]: front/image -> front/depth/image, ... all batched through "
                                          "one model; not given: the params file's (default: one camera)"),
        DeclareLaunchArgument("camera_launch", default_value="",
                              description="a camera driver's launch file (.py, .xml, .yaml) to start with the same "
                                          "Fast DDS profile, so its large frames arrive"),
    ]
    actions += [SetEnvironmentVariable(name, value) for name, value in fastdds.profile_environment().items()]
    actions.append(IncludeLaunchDescription(
        AnyLaunchDescriptionSource(LaunchConfiguration("camera_launch")),
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("camera_launch"), "' != ''"]))))
    actions.append(OpaqueFunction(function=_depth_node))
    return LaunchDescription(actions)
