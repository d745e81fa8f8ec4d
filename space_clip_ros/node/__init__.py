"""The depth node's work without ROS: parameters (settings), per-camera state, intake of a frame, the frame
pipeline on the model's device, scale-reference points, statistics and diagnostics values. Nothing here imports
rclpy or ROS messages (messages are read duck-typed), so all of it is tested without a DDS; :mod:`space_clip_ros.ros`
wraps it in the ROS 2 node."""
