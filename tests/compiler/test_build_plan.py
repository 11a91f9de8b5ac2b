"""The BuildPlan as data: every (TensorRT version, target, precision), what TensorRT 11 refuses (precision
flags, calibration caches, weak typing), what 10.x needs (flags + the float32 keep-list as constraints), and
the refusals a user meets (FP8 or DLA on a target without it, a Python plugin in a version-compatible
engine...). Pure Python: no TensorRT anywhere."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vitrt.compiler.build_plan import (
    BuildOptions,
    BuildPlan,
    BuildPlanError,
    LayerConstraint,
    ModelFacts,
    TensorInfo,
    fixed_batch,
    plan_build,
    precision_steps,
    replan_after_rewrites,
)
from vitrt.compiler.targets import TARGETS, get_target

KEEP = (
    LayerConstraint("blocks.0.norm1/LayerNormalization_1"),
    LayerConstraint("blocks.0.attn.core/Softmax_1"),
)
WEAK_TYPING = {
    "FP16",
    "INT8",
    "BF16",
    "FP8",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
}
"""The BuilderFlag members TensorRT 11.0 removed."""
TENSORRT_TARGETS = [t for t in TARGETS.values() if t.uses_tensorrt]


def facts(precision: str = "fp32", *, batch: int | str = 1, plugins: tuple[str, ...] = ()) -> ModelFacts:
    """A 224 x 224 ViT file holding ``precision``, with the keep-list vitrt fp16 records for float16 files."""
    return ModelFacts(
        precision=precision,
        inputs=(TensorInfo("images", (batch, 3, 224, 224), "float32"),),
        outputs=(TensorInfo("logits", (batch, 1000), "float32"),),
        plugins=plugins,
        layer_constraints=KEEP if "fp16" in precision else (),
    )


MATRIX = [
    (t.name, version, precision)
    for t in TENSORRT_TARGETS
    for version in t.tensorrt_versions()
    for precision in ("fp32", "fp16", "int8", "int8+fp16")
]


@pytest.mark.parametrize(("target", "version", "precision"), MATRIX)
def test_plan_for_every_target_version_and_precision(target: str, version: str, precision: str) -> None:
    spec = get_target(target)
    plan = plan_build(spec, facts(precision), version)
    assert (plan.target, plan.sm, plan.precision, plan.rewrites) == (target, spec.sm, precision, ())
    assert (
        plan.tensorrt == ".".join([*version.split("."), "0"][:3]) and plan.profiling_verbosity == "DETAILED"
    )
    assert plan.memory_pools == {"WORKSPACE": spec.workspace_mib * 2**20}
    assert (plan.optimization_level, plan.hardware_compatibility, plan.device) == (3, "NONE", "GPU")
    assert plan.calibration_cache is None and not plan.needs_python_plugins
    if version.startswith("11."):
        # strongly typed, always: no creation flag (ignored in 11), no removed flag, no constraints
        assert plan.network_flags == () and plan.builder_flags == () and plan.layer_constraints == ()
        assert plan.precision_source == "graph"
    else:
        expected = {
            "fp32": (),
            "fp16": ("FP16", "OBEY_PRECISION_CONSTRAINTS"),
            "int8": ("INT8",),
            "int8+fp16": ("INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"),
        }[precision]
        assert plan.network_flags == () and plan.builder_flags == expected
        assert plan.layer_constraints == (KEEP if "fp16" in precision else ())
        assert plan.precision_source == ("graph" if precision == "fp32" else "builder flags")
    assert BuildPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize("version", ["10.3", "10.16", "11.4"])
@pytest.mark.parametrize(("held", "wanted"), [("fp32", "fp16"), ("int8", "int8+fp16")])
def test_fp16_from_a_float32_graph_is_a_rewrite_on_every_version(
    version: str, held: str, wanted: str
) -> None:
    plan = plan_build("jetson-agx-orin", facts(held), version, BuildOptions(precision=wanted))
    assert plan.rewrites == ("fp16",) and plan.layer_constraints == ()  # the keep-list comes with the rewrite
    final = replan_after_rewrites(plan, "jetson-agx-orin", facts(wanted), BuildOptions(precision=wanted))
    assert final.rewrites == ("fp16",)
    assert final.layer_constraints == (() if version.startswith("11") else KEEP)


def test_tensorrt_11_refuses_calibration_caches_and_weak_typing() -> None:
    options = BuildOptions(precision="int8", calib_cache="model.cache")
    with pytest.raises(
        BuildPlanError, match=r"TensorRT 11\.4\.0 has no calibration caches .*vitrt calibrate"
    ):
        plan_build("h100", facts("fp32"), "11.4.0", options)
    with pytest.raises(BuildPlanError, match=r"always strongly typed"):
        plan_build("h100", facts("fp16"), "11.4", BuildOptions(strongly_typed=False))
    with pytest.raises(BuildPlanError, match=r"FP32 and holds no INT8 scales\. Fix: vitrt calibrate"):
        plan_build("h100", facts("fp32"), "11.4", BuildOptions(precision="int8"))


def test_tensorrt_10_implicit_int8_from_a_calibration_cache() -> None:
    options = BuildOptions(precision="int8", calib_cache="model.cache")
    plan = plan_build("jetson-orin-nano", facts("fp32"), "10.3.0", options)
    assert plan.builder_flags == ("INT8",) and plan.precision_source == "calibration cache"
    assert plan.calibration_cache == "model.cache" and plan.rewrites == ()
    assert any("deprecated since TensorRT 10.1" in n for n in plan.notes)
    with pytest.raises(BuildPlanError, match=r"implicit INT8 of an FP32 file .*holds int8.*Q/DQ scales"):
        plan_build("jetson-orin-nano", facts("int8"), "10.3.0", options)
    with pytest.raises(BuildPlanError, match=r"not from a calibration cache"):
        plan_build(
            "jetson-orin-nano",
            facts("fp32"),
            "10.3",
            BuildOptions("int8", calib_cache="c", strongly_typed=True),
        )


def test_tensorrt_10_strongly_typed_takes_precision_from_the_graph() -> None:
    plan = plan_build("jetson-orin-nx", facts("int8+fp16"), "10.3", BuildOptions(strongly_typed=True))
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()
    assert plan.layer_constraints == () and plan.precision_source == "graph"


def test_fp8_needs_the_hardware_and_a_quantized_graph() -> None:
    with pytest.raises(
        BuildPlanError, match=r"jetson-orin-nano \(sm_87\) has no FP8 .*jetson-thor, h100, l4"
    ):
        plan_build("jetson-orin-nano", facts("fp32"), "10.3", BuildOptions(precision="fp8"))
    with pytest.raises(BuildPlanError, match=r"a100 \(sm_80\) has no FP8"):
        plan_build("a100", facts("fp8"), "11.4")
    with pytest.raises(BuildPlanError, match=r"no FP8 calibration. Fix: .*modelopt"):
        plan_build("h100", facts("fp32"), "11.4", BuildOptions(precision="fp8"))
    with pytest.raises(BuildPlanError, match=r"h100 \(sm_90\) has no FP4"):
        plan_build("h100", facts("fp4"), "11.4")
    plan = plan_build("h100", facts("fp8"), "10.16")  # ModelOpt's FP8 Q/DQ file: strongly typed on 10.x
    assert plan.network_flags == ("STRONGLY_TYPED",) and plan.builder_flags == ()
    assert plan_build("jetson-thor", facts("fp4"), "11.4").precision == "fp4"


def test_dla_only_where_the_target_and_tensorrt_have_it() -> None:
    with pytest.raises(
        BuildPlanError, match=r"jetson-orin-nano has no DLA\. .*jetson-orin-nx, jetson-agx-orin"
    ):
        plan_build("jetson-orin-nano", facts("fp16"), "10.3", BuildOptions(dla_core=0))
    with pytest.raises(BuildPlanError, match=r"jetson-thor has no DLA"):
        plan_build("jetson-thor", facts("fp16"), "11.4", BuildOptions(dla_core=0))
    with pytest.raises(BuildPlanError, match=r"DLA cores 0-1; --dla-core 2"):
        plan_build("jetson-agx-orin", facts("fp16"), "10.3", BuildOptions(dla_core=2))
    with pytest.raises(BuildPlanError, match=r"TensorRT 11\.4\.0 has no DLA"):
        plan_build("jetson-agx-orin", facts("fp16"), "11.4.0", BuildOptions(dla_core=0))
    with pytest.raises(BuildPlanError, match=r"DLA computes in FP16 and INT8 only"):
        plan_build("jetson-agx-orin", facts("fp32"), "10.3", BuildOptions(dla_core=0))
    with pytest.raises(BuildPlanError, match=r"DLA needs static shapes"):
        plan_build(
            "jetson-agx-orin", facts("fp16", batch="batch"), "10.3", BuildOptions(dla_core=1, max_batch=8)
        )
    plan = plan_build("jetson-agx-orin", facts("fp16"), "10.3", BuildOptions(dla_core=1))
    assert (plan.device, plan.dla_core) == ("DLA", 1)
    assert plan.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS", "GPU_FALLBACK")
    plan = plan_build("jetson-agx-orin", facts("fp16"), "11.4.1", BuildOptions(dla_core=0))  # JetPack 7.2.2
    assert plan.builder_flags == ("GPU_FALLBACK",) and plan.device == "DLA"


def test_python_plugins_are_recorded_and_keep_engines_out_of_the_lean_runtime() -> None:
    plugin_file = facts("fp32", plugins=("ScatterbrainAttention", "TokenFusion"))
    plan = plan_build("h100", plugin_file, "11.4")
    assert plan.needs_python_plugins and plan.plugins == ("ScatterbrainAttention", "TokenFusion")
    assert any("not under trtexec" in n for n in plan.notes)
    with pytest.raises(BuildPlanError, match=r"lean runtime.*Python plugins.*--lowering portable"):
        plan_build("h100", plugin_file, "11.4", BuildOptions(version_compatible=True))
    plan = plan_build("h100", facts("fp32"), "11.4", BuildOptions(version_compatible=True))
    assert plan.builder_flags == ("VERSION_COMPATIBLE",) and plan.version_compatible


def test_shape_profiles_for_a_dynamic_batch() -> None:
    dynamic = facts("fp32", batch="batch")
    plan = plan_build("l4", dynamic, "10.16", BuildOptions(min_batch=1, opt_batch=8, max_batch=32))
    (profile,) = plan.profiles
    assert (profile.input, profile.min, profile.opt, profile.max) == (
        "images",
        (1, 3, 224, 224),
        (8, 3, 224, 224),
        (32, 3, 224, 224),
    )
    assert plan_build("l4", dynamic, "10.16", BuildOptions(max_batch=4)).profiles[0].opt == (4, 3, 224, 224)
    unset = plan_build("l4", dynamic, "10.16")
    assert unset.profiles[0].max == (1, 3, 224, 224) and any("built for batch 1" in n for n in unset.notes)
    with pytest.raises(BuildPlanError, match=r"need --min <= --opt <= --max"):
        plan_build("l4", dynamic, "10.16", BuildOptions(min_batch=8, opt_batch=2))
    with pytest.raises(BuildPlanError, match=r"fixed batch of 1.*--dynamic-batch"):
        plan_build("l4", facts("fp32"), "10.16", BuildOptions(max_batch=8))
    assert plan_build("l4", facts("fp32"), "10.16").profiles == ()  # static: no profile needed


def test_limits_and_compatibility_options() -> None:
    with pytest.raises(BuildPlanError, match=r"workspace 9000 MiB is outside 1 .. 8192 MiB"):
        plan_build("jetson-orin-nano", facts(), "10.3", BuildOptions(workspace_mib=9000))
    with pytest.raises(BuildPlanError, match=r"optimisation level must be 0-5"):
        plan_build("h100", facts(), "11.4", BuildOptions(optimization_level=6))
    with pytest.raises(BuildPlanError, match=r"unknown hardware compatibility 'turing'"):
        plan_build("h100", facts(), "11.4", BuildOptions(hardware_compatibility="turing"))
    plan = plan_build(
        "a100", facts(), "11.4", BuildOptions(hardware_compatibility="ampere_plus", workspace_mib=512)
    )
    assert plan.hardware_compatibility == "AMPERE_PLUS" and plan.memory_pools == {"WORKSPACE": 512 * 2**20}
    with pytest.raises(BuildPlanError, match=r"IPluginV3 .*TensorRT >= 10.0"):
        plan_build("jetson-orin-nano", facts(), "8.6.2")
    with pytest.raises(BuildPlanError, match=r"does not use TensorRT"):
        plan_build("cpu", facts(), "10.3")
    with pytest.raises(BuildPlanError, match=r"not like '10.3.0'"):
        plan_build("h100", facts(), "ten")


@pytest.mark.parametrize(
    ("held", "wanted", "message"),
    [
        ("int8", "fp32", "holds int8; it cannot be built as fp32"),
        ("fp16", "int8", "holds fp16; it cannot be built as int8"),
        ("fp32", "int8+fp16", "vitrt calibrate .* --precision int8\\+fp16"),
    ],
)
def test_a_file_cannot_become_any_precision(held: str, wanted: str, message: str) -> None:
    with pytest.raises(BuildPlanError, match=message):
        precision_steps(held, wanted)


@pytest.mark.parametrize(
    ("shape", "expected"),
    [((4, 3, 224, 224), 4), ([1, 3, 32, 32], 1), (("batch", 3, 224, 224), None), (("?", 3), None),
     ((0, 3), None), ((-1, 3), None), ((), None), (None, None), ((True, 3), None)],
)  # fmt: skip
def test_a_fixed_batch_is_a_positive_first_axis(shape: Any, expected: int | None) -> None:
    """The one rule the build plans, verify and the runners' sources read an input's batch axis by: a
    positive number fixes it; a name, "?", 0, -1 or a missing axis leaves it dynamic."""
    assert fixed_batch(shape) == expected
