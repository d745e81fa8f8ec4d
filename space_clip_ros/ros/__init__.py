"""ROS 2 glue: message conversions, the depth node, the player and the demo. Needs rclpy and sensor_msgs."""
