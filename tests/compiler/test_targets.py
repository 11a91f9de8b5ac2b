"""Target profiles: the facts the build plans rely on, and ``vitrt targets``."""

from __future__ import annotations

import json

import pytest

from vitrt.compiler.cli import main
from vitrt.compiler.targets import TARGETS, get_target, targets
from vitrt.errors import ConfigError

REQUIRED = (
    "jetson-orin-nano",
    "jetson-orin-nx",
    "jetson-agx-orin",
    "jetson-thor",
    "a100",
    "h100",
    "l4",
    "cpu",
)


def test_the_targets_and_their_hardware() -> None:
    assert set(REQUIRED) <= set(TARGETS)
    sms = {name: t.sm for name, t in TARGETS.items()}
    assert sms == {
        "jetson-orin-nano": "sm_87",
        "jetson-orin-nx": "sm_87",
        "jetson-agx-orin": "sm_87",
        "jetson-thor": "sm_110",
        "a100": "sm_80",
        "h100": "sm_90",
        "l4": "sm_89",
        "cpu": None,
    }
    assert {n for n, t in TARGETS.items() if t.dla_cores} == {"jetson-orin-nx", "jetson-agx-orin"}
    assert {n for n, t in TARGETS.items() if t.supports("fp8")} == {"jetson-thor", "h100", "l4"}
    assert {n for n, t in TARGETS.items() if t.supports("fp4")} == {"jetson-thor"}
    for t in TARGETS.values():
        assert t.supports("int8+fp16") and t.supports("fp32")
        if t.uses_tensorrt:
            assert t.workspace_mib <= t.memory_gib * 1024 / 8 and 0 <= t.optimization_level <= 5
            assert t.sm == f"sm_{t.compute_capability[0]}{t.compute_capability[1]}"  # type: ignore[index]


def test_software_stacks_per_jetpack() -> None:
    """Orin on JetPack 6 stays on TensorRT 10.3 (CUDA 12.6); Thor and datacenter wheels default to 11.x."""
    nano = get_target("jetson-orin-nano").default_stack
    assert nano is not None and (nano.jetpack, nano.tensorrt, nano.cuda) == ("6.2", "10.3", "12.6")
    assert get_target("jetson-agx-orin").tensorrt_versions() == ("10.3", "10.16", "11.4.1")
    assert get_target("jetson-thor").tensorrt_versions() == ("11.4.1", "10.16", "10.13")
    assert [s.tensorrt_major for s in get_target("h100").stacks] == [11, 10]
    assert get_target("cpu").stacks == ()


def test_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown target 'orin'; one of: jetson-orin-nano, .*, cpu"):
        get_target("orin")
    assert [t.name for t in targets(["h100", "cpu"])] == ["h100", "cpu"]


def test_vitrt_targets_prints_table_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["target", "SM", "memory"] and len(lines) == 1 + len(TARGETS)
    assert lines[1].split()[:5] == ["jetson-orin-nano", "sm_87", "8", "GiB", "0"]
    assert main(["targets", "jetson-thor", "--json"]) == 0
    (thor,) = json.loads(capsys.readouterr().out)
    assert thor["sm"] == "sm_110" and thor["compute_capability"] == [11, 0] and "fp4" in thor["precisions"]
    assert main(["targets", "orin"]) == 2
    assert "unknown target 'orin'" in capsys.readouterr().err
