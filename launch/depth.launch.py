"""ros2 launch space_clip_ros depth.launch.py checkpoint:=/path/space_clip.pt [namespace:=camera] [device:=cuda]
[backend:=auto] [cameras:=[front,left]] [camera_launch:=/path/to/driver.launch.py]

Starts depth_node (configured and activated at start) with config/depth.yaml, remapping its relative topics to the
camera's. Fast DDS uses the package's shared-memory profile unless FASTRTPS_DEFAULT_PROFILES_FILE or
FASTDDS_DEFAULT_PROFILES_FILE is already set; every process this launch file starts gets it, the camera driver that
camera_launch names included (a stock driver started elsewhere cannot put a large frame in its 512 KB shared-memory
segment, and a best-effort one then loses frames: see README, "QoS and frames that arrive").
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.launch_description_sources import AnyLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node

from launch import LaunchDescription
from space_clip_ros.ros import fastdds


def generate_launch_description():
    share = get_package_share_directory("space_clip_ros")
    actions = [
        DeclareLaunchArgument("namespace", default_value="camera", description="namespace of node and topics"),
        DeclareLaunchArgument("image", default_value="image_rect_color", description="input image topic"),
        DeclareLaunchArgument("camera_info", default_value="camera_info", description="input camera_info topic"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "depth.yaml")),
        DeclareLaunchArgument("checkpoint", default_value="", description="space_clip_ros checkpoint (.pt)"),
        DeclareLaunchArgument("device", default_value="auto", description="auto | cpu | cuda | cuda:N"),
        DeclareLaunchArgument("backend", default_value="auto",
                              description="auto | eager | compile | cudagraph | openvino | onnxruntime"),
        DeclareLaunchArgument("cameras", default_value="",
                              description="empty: one camera; [front,left]: front/image -> front/depth/image, ... "
                                          "all batched through one model"),
        DeclareLaunchArgument("camera_launch", default_value="",
                              description="a camera driver's launch file (.py, .xml, .yaml) to start with the same "
                                          "Fast DDS profile, so its large frames arrive"),
    ]
    actions += [SetEnvironmentVariable(name, value) for name, value in fastdds.profile_environment().items()]
    actions.append(IncludeLaunchDescription(
        AnyLaunchDescriptionSource(LaunchConfiguration("camera_launch")),
        condition=IfCondition(PythonExpression(["'", LaunchConfiguration("camera_launch"), "' != ''"]))))
    actions.append(Node(
        package="space_clip_ros",
        executable="depth_node",
        name="depth_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file"),
                    {"checkpoint": LaunchConfiguration("checkpoint"), "device": LaunchConfiguration("device"),
                     "backend": LaunchConfiguration("backend"), "cameras": LaunchConfiguration("cameras")}],
        remappings=[("image", LaunchConfiguration("image")),
                    ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
                    ("camera_info", LaunchConfiguration("camera_info"))],
    ))
    return LaunchDescription(actions)
