"""One source per parameter (space_clip_ros/node/settings.py, SPECS): the defaults, NodeSettings, the runtime-change
rules, config/depth.yaml, the launch file's arguments and the tables of docs/node.md and the README follow it.
(What ROS shows of it, `ros2 param describe`, is tested over DDS in test_depth_node.py.)"""

import re
import sys
from pathlib import Path

import pytest

from space_clip_ros.node.settings import (
    CHANGES,
    PARAMETERS,
    RELOAD_PARAMETERS,
    RESUBSCRIBE_PARAMETERS,
    SPECS,
    STARTUP_PARAMETERS,
    TOPIC_PARAMETERS,
    NodeSettings,
    runtime_change_refusal,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import parameter_table  # noqa: E402


def test_each_spec_is_complete_and_its_default_is_valid():
    assert len({s.name for s in SPECS}) == len(SPECS) == len(PARAMETERS)
    for spec in SPECS:
        assert spec.description and spec.change in CHANGES, spec.name
        number = isinstance(spec.default, (int, float)) and not isinstance(spec.default, bool)
        assert (spec.low is not None) == number, f"{spec.name}: every number has a range, nothing else"
        if number:
            assert spec.low <= spec.default <= spec.high, spec.name
        if spec.choices:
            assert spec.default in spec.choices, spec.name
    NodeSettings.from_values({})  # the defaults pass validation


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_the_ends_of_each_range_and_each_choice_pass_the_node_s_validation(spec):
    """Whatever ROS lets through (a range's inclusive ends, every choice) the node accepts on its own, so no value
    is refused twice for different reasons; relations between parameters are the node's (min < max)."""
    related = {"min_depth": {"max_depth": float("inf")}, "colored_min_depth": {"colored_max_depth": float("inf")},
               "scan_range_min": {"scan_range_max": float("inf")},
               "points_filtered_min_range": {"points_filtered_max_range": float("inf")}}
    values = [spec.low] if spec.low is not None else []
    values += list(spec.choices)
    for value in values:
        if spec.name in ("max_depth", "colored_max_depth", "scan_range_max", "points_filtered_max_range") \
                and value == 0.0:
            continue  # 0 as an upper end: only with its lower end below, the node's relation
        NodeSettings.from_values({spec.name: value, **related.get(spec.name, {})})


def test_the_runtime_change_rules_come_from_the_table():
    assert RELOAD_PARAMETERS == {"checkpoint", "backbone", "untrained_demo", "device", "precision", "backend"}
    assert TOPIC_PARAMETERS == {"cameras"} and STARTUP_PARAMETERS == {"autostart", "diagnostics_period"}
    assert RESUBSCRIBE_PARAMETERS == {"input_transport", "image_reliability", "scale_reference", "temporal_filter"}
    for spec in SPECS:
        refusal = runtime_change_refusal(spec.name, configured=True, active=True)
        assert (refusal is None) == (spec.change == "runtime"), spec.name


def test_docs_node_md_holds_the_table_as_made():
    text = (ROOT / "docs" / "node.md").read_text()
    assert parameter_table.replaced(text) == text, "run: python tools/parameter_table.py --write"
    for spec in SPECS:
        assert f"| `{spec.name}` |" in text


def test_the_yaml_file_users_edit_has_every_parameter_with_its_default():
    yaml = pytest.importorskip("yaml")
    values = yaml.safe_load((ROOT / "config" / "depth.yaml").read_text())["/**"]["ros__parameters"]
    assert values == PARAMETERS


def test_the_launch_arguments_that_set_parameters_are_not_given_by_default():
    """checkpoint, device, backend and cameras override the params file only when given: their launch defaults are
    empty (not given), the launch file passes exactly those, and each description names the table's default."""
    text = (ROOT / "launch" / "depth.launch.py").read_text()
    arguments = dict(re.findall(r'DeclareLaunchArgument\("(\w+)", default_value="([^"]*)"', text))
    shared = set(arguments) & set(PARAMETERS)
    assert shared == {"checkpoint", "device", "backend", "cameras"}
    assert re.search(r'OVERRIDES = \(([^)]*)\)', text).group(1).replace('"', "").replace(" ", "").split(",") == \
        ["checkpoint", "device", "backend", "cameras"]
    found = re.findall(r'DeclareLaunchArgument\("(\w+)", default_value="[^"]*",\s*'
                       r'description="([^"]+(?:"\s*"[^"]+)*)"', text)
    descriptions = {name: re.sub(r'"\s*"', "", joined) for name, joined in found}  # adjacent literals joined
    for name in shared:
        assert arguments[name] == "", name
        assert "not given: the params file's" in descriptions[name], name
    for name in ("device", "backend"):
        assert f"default {PARAMETERS[name]}" in descriptions[name], name
    backend_help = descriptions["backend"]
    assert all(choice in backend_help for choice in dict((s.name, s) for s in SPECS)["backend"].choices)


def test_the_readme_names_every_parameter_and_nothing_else():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("| parameters at a glance"):]
    table = table[:table.index("\n\n")]
    names = set()
    for token in re.findall(r"`([a-z_]+)`", table):
        names.add(f"points_filtered{token}" if token.startswith("_") else token)
    assert names - {"depth", "auto"} == set(PARAMETERS)  # every parameter, and nothing else
