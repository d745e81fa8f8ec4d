"""The ROS 2 side: the depth node (lifecycle, parameters, each camera's topics), the messages it publishes, tf,
rosbag2 recordings, the player, the recorder and the demo; run with rclpy and the ROS message packages. The node's
work without ROS is space_clip_ros.node."""
