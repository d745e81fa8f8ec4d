"""The depth node's ROS-free parts: parameter settings and runtime-change rules, frame statistics, Fast DDS profile
selection. (The node itself is tested over real DDS in test_depth_node.py.)"""

import dataclasses

import pytest

from space_clip_ros.node.settings import (
    PARAMETERS,
    NodeSettings,
    parse_output_size,
    runtime_change_refusal,
)
from space_clip_ros.node.stats import FrameStats, Rate
from space_clip_ros.ros import fastdds


def test_every_parameter_is_a_typed_setting_and_the_defaults_are_valid():
    """NodeSettings has one field per parameter, in the same order, each typed as its default (what the node
    declares to ROS), and the defaults pass validation."""
    fields = dataclasses.fields(NodeSettings)
    assert [f.name for f in fields] == list(PARAMETERS)
    types = {"str": str, "bool": bool, "int": int, "float": float, "Tuple[str, ...]": list}
    for f in fields:
        assert type(PARAMETERS[f.name]) is types[f.type], (f.name, f.type, PARAMETERS[f.name])
    assert NodeSettings.from_values({}).fixed_output_size is None


@pytest.mark.parametrize("change, message", [
    ({"colormap": "nope"}, "colormap must be one of"),
    ({"input_transport": "theora"}, "input_transport must be"),
    ({"points_stride": 0}, "points_stride must be >= 1"),
    ({"min_depth": 90.0}, "min_depth < max_depth"),
    ({"colored_min_depth": 60.0}, "colored_min_depth < colored_max_depth"),
    ({"output_size": "big"}, "output_size must be"),
    ({"output_size": "0x10"}, "output_size must be"),
    ({"camera_info_cache": 0}, "camera_info_cache must be >= 1"),
    ({"diagnostics_period": 0.0}, r"diagnostics_period must be >= 0.001 \(seconds between"),
    ({"device": "gpu"}, "device must be"),
    ({"precision": "int8"}, "precision must be one of"),
    ({"backend": "tensorrt"}, "backend must be one of"),
    ({"nonsense": 1}, "unknown parameters"),
    ({"cameras": ["front", "front"]}, "must be unique"),
    ({"cameras": ["/front"]}, "not a relative ROS name"),
    ({"cameras": ["front left"]}, "not a relative ROS name"),
    ({"cameras": [1, 2]}, "list of camera names"),
    ({"scan_height": 0}, "scan_height must be >= 1"),
    ({"scan_range_min": 30.0}, "scan_range_min < scan_range_max"),
    ({"scan_range_min": -1.0}, "scan_range_min < scan_range_max"),
    ({"scan_frame": "/base_scan"}, "scan_frame must be a tf2 frame id"),
    ({"points_filtered_min_range": 20.0}, "points_filtered_min_range < points_filtered_max_range"),
    ({"points_filtered_edge_threshold": -0.1}, r"points_filtered_edge_threshold must be >= 0 \(drop a pixel"),
    ({"points_filtered_edge_threshold": float("nan")}, "points_filtered_edge_threshold must be >= 0"),
    ({"points_filtered_voxel": -0.05}, "points_filtered_voxel must be >= 0"),
    ({"points_filtered_stride": 0}, "points_filtered_stride must be >= 1"),
    ({"scale_holdout": 1.0}, "scale_holdout must be within 0..0.99"),
    ({"temporal_max_frames": 0}, "temporal_max_frames must be within 1..255"),
    ({"scan_min_confidence": 1.5}, "scan_min_confidence must be within 0..1"),
    ({"scale_reference": "Points"}, r"scale_reference must be one of \['', 'points', 'depth'\]"),
    ({"odom_frame": " odom"}, "odom_frame must be a tf2 frame id"),
])
def test_invalid_values_are_refused_with_the_reason(change, message):
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_values(change)
    with pytest.raises(ValueError, match=message):
        NodeSettings.from_values({}).replace(**change)


def test_replace_keeps_the_other_values():
    settings = NodeSettings.from_values({"max_depth": 40.0, "output_size": "640x480"})
    assert settings.fixed_output_size == (480, 640)
    changed = settings.replace(colormap="gray")
    assert changed.colormap == "gray" and changed.max_depth == 40.0 and settings.colormap == "turbo"
    assert parse_output_size(" Model ") is None


def test_which_changes_need_a_reload_or_resubscription():
    assert runtime_change_refusal("colormap", configured=True, active=True) is None
    assert runtime_change_refusal("max_depth", configured=True, active=True) is None
    for name in ("checkpoint", "device", "precision", "backend", "backbone", "untrained_demo"):
        assert "loaded again" in runtime_change_refusal(name, configured=True, active=False)
        assert runtime_change_refusal(name, configured=False, active=False) is None
    assert "deactivate" in runtime_change_refusal("input_transport", configured=True, active=True)
    assert runtime_change_refusal("input_transport", configured=True, active=False) is None
    assert "read once at start" in runtime_change_refusal("autostart", configured=False, active=False)
    assert "changes the node's topics" in runtime_change_refusal("cameras", configured=True, active=False)
    assert NodeSettings.from_values({"cameras": ["front", "stereo/left"]}).cameras == ("front", "stereo/left")
    assert NodeSettings.from_values({"cameras": "front, left"}).cameras == ("front", "left")
    assert NodeSettings.from_values({"cameras": ""}).cameras == ()


def test_frame_stats_count_by_reason_and_time():
    stats = FrameStats(window=3)
    for t in (0.0, 0.1, 0.2, 0.3):
        stats.frame_in(t)
    stats.count("dropped", 2)
    stats.reject("image", "unsupported encoding 'yuv422'", "unsupported_encoding")
    stats.reject("camera_info", "zero focal length", "info_zero_focal")
    for i, t in enumerate((0.1, 0.3, 0.5, 0.7)):
        stats.published(t, inference_ms=10.0 * (i + 1), latency_ms=20.0 * (i + 1), points_latency_ms=None,
                        batch=1 + i % 2)
    values = stats.values(0.7)
    assert values["frames_published"] == "4" and values["frames_dropped"] == "2"
    assert values["rejected_total"] == "2" and values["rejected_image"] == "1" and values["rejected_camera_info"] == "1"
    assert values["rejected_frame"] == "0" and values["frames_idle_no_subscribers"] == "0"
    assert values["last_rejection"] == "camera_info: zero focal length"
    assert values["rejected.unsupported_encoding"] == "1" and values["rejected.info_zero_focal"] == "1"
    assert sorted(k for k in values if k.startswith("rejected.")) == ["rejected.info_zero_focal",
                                                                      "rejected.unsupported_encoding"]
    assert values["inference_ms_median"] == "30.0"  # the window keeps the last 3: 20, 30, 40
    assert values["latency_ms_median"] == "60.0" and values["points_latency_ms_median"] == "n/a"
    assert values["batch_median"] == "2.0"  # batches 1, 2, 1, 2: the window keeps 2, 1, 2
    assert float(values["output_rate_hz"]) == pytest.approx(5.0)
    assert float(values["input_rate_hz"]) == pytest.approx(10.0)


def test_rate_forgets_old_events():
    rate = Rate(window_s=1.0)
    for t in (0.0, 0.5, 1.0):
        rate.tick(t)
    assert rate.hz(1.0) == pytest.approx(2.0)
    assert rate.hz(10.0) == 0.0


def test_fastdds_profile_only_when_the_user_chose_none():
    env = {}
    fastdds.use_shipped_profile(env)
    assert env == {name: fastdds.profile_path() for name in fastdds.PROFILE_VARIABLES}
    assert fastdds.profile_path().endswith("fastdds_profile.xml")
    mine = {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    fastdds.use_shipped_profile(mine)
    assert mine == {"FASTDDS_DEFAULT_PROFILES_FILE": "/etc/my_profile.xml"}
    assert fastdds.user_profile(mine) == "/etc/my_profile.xml"
    local = {}
    fastdds.use_shipped_profile(local, localhost=True)
    assert set(local.values()) == {fastdds.profile_path(localhost=True)}
    import os

    assert all(os.path.isfile(fastdds.profile_path(flag)) for flag in (False, True))
