"""Export to ONNX, simplification, verification on ONNX Runtime (CPU)."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from vitrt.compiler.cli import main
from vitrt.compiler.export import ExportConfig, export_model, model_from_config, read_export_config
from vitrt.compiler.verify import load_inputs, load_outputs, save_inputs, verify_onnx
from vitrt.errors import ConfigError, VitrtError

# Small inputs keep the CPU suite fast; the shapes still exercise every soft split, and with 17
# tokens every fusion preset still fuses (down to the 10-token floor).
# Scatterbrain replaces the token attentions of the "transformer" T2T module (t2t_vit_t_*); the
# performer T2T (t2t_vit_7) and DeiT have none, so the attention axis applies to t2t_vit_t_14 only.
CASES = [
    ("t2t_vit_7", 64, None),
    ("t2t_vit_t_14", 64, None),
    ("t2t_vit_t_14", 64, "scatterbrain"),
    ("deit_tiny_patch16_224", 64, None),
]
FUSIONS = [None, "mctf", "mctf-fast", "tome"]
# The plugin lowering (what TensorRT builds) runs every fusion on t2t_vit_7, deit_tiny and t2t_vit_t_14 with
# Scatterbrain. t2t_vit_t_14 without it adds only its dense token-transformer T2T module (the fusions act
# on backbone blocks, the same in every case), so it runs once per lowering: MCTF as plugin nodes, and
# as the plain graph (without plugin ops, both lowerings export the same graph). The portable lowering
# puts each op's reference graph in place of its node whatever the model around it, so it runs each case
# and each fusion once, the heaviest pair (Scatterbrain and MCTF in one graph) among them: 17 exports
# instead of 32, every pair of a case and a lowering, and of a fusion and a lowering, among them.
PORTABLE_FUSIONS = ["tome", None, "mctf", "mctf-fast"]  # one per case, in CASES' order
MATRIX = [
    (*case, fusion, "plugin")
    for case in CASES
    for fusion in (FUSIONS if case != ("t2t_vit_t_14", 64, None) else ["mctf"])
] + [(*case, fusion, "portable") for case, fusion in zip(CASES, PORTABLE_FUSIONS, strict=True)]


def _export(tmp_path: Path, name: str, size: int, lowering: str = "plugin", **kwargs: object) -> Path:
    config = ExportConfig(name, lowering=lowering, input_size=(3, size, size), img_size=size, **kwargs)  # type: ignore[arg-type]
    return export_model(model_from_config(config), tmp_path / f"{name}.{lowering}.onnx", config)


@pytest.mark.parametrize(
    ("name", "size", "attention", "fusion", "lowering"), MATRIX, ids=["-".join(map(str, m)) for m in MATRIX]
)
def test_export_matches_pytorch_on_onnxruntime(
    tmp_path: Path, name: str, size: int, attention: str | None, fusion: str | None, lowering: str
) -> None:
    path = _export(tmp_path, name, size, lowering, fusion=fusion, attention=attention)
    proto = onnx.load(str(path))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["ScatterbrainAttention"] == (2 if attention and lowering == "plugin" else 0)
    with torch.device("meta"):  # the schedule and the T2T grid need no weights
        model = model_from_config(read_export_config(proto))  # type: ignore[arg-type]
    schedule = model.token_schedule()
    fused_blocks = sum(1 for a, b in pairwise(schedule) if b < a)
    assert ops["TokenFusion"] == (fused_blocks if lowering == "plugin" else 0)
    assert fused_blocks > 0 or fusion is None
    if lowering == "plugin" and attention and fusion:  # both ops in one graph
        _check_plugin_nodes(proto, schedule, model.tokens_to_token.grid[0])
    # TensorRT has no scatter-add: exported merges are one-hot matmuls.
    assert all(a.s != b"add" for n in proto.graph.node if n.op_type == "ScatterElements" for a in n.attribute)
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["images"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert not any(n.op_type in ("Identity", "Constant") for n in proto.graph.node)  # simplified
    # Readable names carrying the block index (fusion blocks project q, k, v themselves, under their
    # export scope: blocks.0.inline_attn/...), on every node: simplification (onnxsim's fusions included)
    # keeps the module paths.
    assert any(n.name.startswith(("blocks.0.attn.qkv/", "blocks.0.inline_attn/")) for n in proto.graph.node)
    assert [n.name for n in proto.graph.node if "/" not in n.name] == []
    report, _, _ = verify_onnx(path, atol=1e-4, rtol=0, iterations=2)
    assert report.passed, report.format()
    assert report.outputs[0].max_abs <= 1e-4


# Ops that only the two references' internals export to (sorting and matching, XBOX+ hashing, round
# combination): none may be left beside the plugin nodes. ReduceMax, Equal, Log, GatherElements... also come
# from the block-level parts of MCTF (pooling weights, one-step-ahead attention: V'[dest]), which stay outside
# the op.
OP_INTERNALS = {
    "TopK",
    "ArgMax",
    "CumSum",
    "ReduceLogSumExp",
    "ScatterElements",
    "Sqrt",
    "Floor",
}


def _check_plugin_nodes(proto: onnx.ModelProto, schedule: list[int], grid: int) -> None:
    """One node per op instance and nothing of the references' internals beside them; the nodes carry
    TensorRT's plugin fields; ONNX shape inference knows their outputs from the registered schemas alone
    (Scatterbrain's first T2T attention over ``grid``^2 tokens, the first fusion from its schedule)."""
    ops = Counter(n.op_type for n in proto.graph.node)
    assert not OP_INTERNALS & set(ops), ops
    plugin_nodes = [n for n in proto.graph.node if n.domain == "vitrt"]
    assert len(plugin_nodes) == ops["TokenFusion"] + ops["ScatterbrainAttention"]
    for node in plugin_nodes:
        attrs = {a.name: a for a in node.attribute}
        assert attrs["plugin_version"].s == b"1" and attrs["plugin_namespace"].s == b"vitrt"
    sb = next(n for n in plugin_nodes if n.op_type == "ScatterbrainAttention")
    initializers = {t.name: t for t in proto.graph.initializer}
    assert list(initializers[sb.input[3]].dims) == [2, 66] and list(initializers[sb.input[4]].dims) == [
        12,
        64,
    ]
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(copy, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    assert shapes[f"{sb.name}:0"] == [1, 1, grid * grid, 64]
    first = next(n for n in plugin_nodes if n.op_type == "TokenFusion")
    before, after = next((a, b) for a, b in pairwise(schedule) if b < a)
    assert shapes[f"{first.name}:0"] == [1, after, 384] and shapes[f"{first.name}:2"] == [1, before]


def test_mctf_fuses_every_t2t_vit_block_but_the_first_at_224() -> None:
    config = ExportConfig("t2t_vit_t_14", lowering="plugin", fusion="mctf", attention="scatterbrain")
    with torch.device("meta"):  # the schedule needs no weights
        schedule = model_from_config(config).token_schedule()
    assert sum(1 for a, b in pairwise(schedule) if b < a) == 13  # until the 10-token floor


def test_export_is_deterministic_and_carries_its_config(tmp_path: Path) -> None:
    first = _export(tmp_path / "", "t2t_vit_7", 64)
    data = first.read_bytes()
    second = _export(tmp_path, "t2t_vit_7", 64)
    assert second.read_bytes() == data
    config = read_export_config(onnx.load(str(first)))
    assert config is not None
    assert (config.model, config.img_size, config.lowering, config.batch) == ("t2t_vit_7", 64, "plugin", 1)


def _default_rules() -> tuple[object, ...]:
    """onnxscript's default rewrite rules (the list export_model edits), or a skip where it has none."""
    from onnxscript import rewriter

    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if not isinstance(rules, tuple):
        pytest.skip("this onnxscript has no _DEFAULT_REWRITE_RULES: export_model leaves its optimizer as is")
    return rules


@pytest.mark.slow
def test_the_slice_pair_rule_left_out_changes_no_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """export_model leaves onnxscript's Slice pair -> Split rule out of torch's optimizer (most of the
    trace time of Scatterbrain's portable lowering, 140 Slices here): the file is the same byte for byte as
    with the rule, and the rule list is restored after the export. The Slices are the T2T module's two
    Scatterbrain attentions, so one backbone block of the 14 is kept (a third of the time), and one hash
    round of the default two (52 s -> 32 s on 2 cores)."""
    import contextlib

    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import slice_split_rule

    import vitrt.compiler.export as export_module

    rules = _default_rules()
    seen: list[bool] = []  # per optimizer rewrite pass: whether the Slice pair rule was in it

    class Spy(rewriter.RewritePass):
        def __init__(self, rule_list: object, /) -> None:
            seen.append(slice_split_rule in rule_list)
            super().__init__(rule_list)

    monkeypatch.setattr(rewriter, "RewritePass", Spy)
    config = ExportConfig(
        "t2t_vit_t_14",
        lowering="portable",
        input_size=(3, 32, 32),
        img_size=32,
        attention={"method": "scatterbrain", "n_hashes": 1},
    )
    model = model_from_config(config)
    model.blocks = torch.nn.ModuleList(model.blocks[:1])
    without = export_model(model, tmp_path / "without.onnx", config)
    assert seen and not any(seen)
    assert rewriter._DEFAULT_REWRITE_RULES is rules
    assert sum(n.op_type == "Slice" for n in onnx.load(str(without)).graph.node) > 100
    monkeypatch.setattr(export_module, "without_slice_pair_rewrite", contextlib.nullcontext)
    seen.clear()
    full = export_model(model, tmp_path / "full.onnx", config)
    assert seen and all(seen)
    assert full.read_bytes() == without.read_bytes()


def test_without_slice_pair_rewrite_restores_the_rules_on_error() -> None:
    from onnxscript import rewriter
    from onnxscript.rewriter.rules.common import slice_split_rule

    from vitrt.compiler.export import without_slice_pair_rewrite

    rules = _default_rules()
    with pytest.raises(RuntimeError, match="boom"), without_slice_pair_rewrite():
        assert slice_split_rule not in rewriter._DEFAULT_REWRITE_RULES
        assert len(rewriter._DEFAULT_REWRITE_RULES) == len(rules) - 1
        raise RuntimeError("boom")
    assert rewriter._DEFAULT_REWRITE_RULES is rules


def test_export_drops_the_exporters_torchvision_notes_and_nothing_else(tmp_path: Path) -> None:
    """A library export shows none of the exporter's "torchvision is not installed" warnings (one per
    torchvision op, on every export where torchvision is absent); the filter drops that message only, on
    that logger only, and is gone after its block, also when the block raises."""
    import logging

    from vitrt.compiler.export import TORCHVISION_NOTE_LOGGER, without_torchvision_notes

    class Keep(logging.Handler):
        def __init__(self) -> None:
            super().__init__(logging.DEBUG)
            self.messages: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.messages.append(record.getMessage())

    logger, keep = logging.getLogger(TORCHVISION_NOTE_LOGGER), Keep()
    logger.addHandler(keep)
    try:
        _export(tmp_path, "deit_tiny_patch16_224", 32)
        assert not [m for m in keep.messages if "torchvision" in m], keep.messages
        with pytest.raises(RuntimeError, match="boom"), without_torchvision_notes():
            logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            logger.warning("a note about the model")
            raise RuntimeError("boom")
        logger.warning("torchvision is not installed. Skipping %s", "torchvision::roi_align")
    finally:
        logger.removeHandler(keep)
    assert keep.messages[-2:] == [
        "a note about the model",
        "torchvision is not installed. Skipping torchvision::roi_align",
    ]


def test_dynamic_batch(tmp_path: Path) -> None:
    path = _export(tmp_path, "deit_tiny_patch16_224", 64, batch=None)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 64, 64]
    for batch in (1, 3):
        report, _, outputs = verify_onnx(path, atol=1e-4, rtol=0, batch=batch)
        assert report.passed and outputs[0]["logits"].shape == (batch, 1000)


def test_the_performer_epsilon_survives_export_where_every_feature_underflows(tmp_path: Path) -> None:
    """The T2T performer divides by phi(q) . sum phi(k) + 1e-8; where every random feature of a token
    underflows (large keys: exp(w k - |k|^2 / 2) = 0) only the epsilon keeps 0 / 0 out. The exporter's
    rewriter deletes ``x + c`` for scalars within 1e-8 of zero, so this checks the epsilon is in the file:
    finite logits equal to PyTorch's where the model without it gives NaN."""
    import onnxruntime as ort

    from vitrt.models import create_model

    model = create_model("t2t_vit_7", img_size=64, num_classes=10).eval()
    with torch.no_grad():  # keys (and queries) of attention1 40x larger: |k|^2 / 2 swamps w k
        model.tokens_to_token.attention1.kqv.weight.mul_(40.0)
    x = torch.randn(
        1, 3, 64, 64, generator=torch.Generator().manual_seed(int(np.random.default_rng().integers(1 << 30)))
    )
    with torch.no_grad():
        block = model.tokens_to_token.attention1
        h = block.norm1(model.tokens_to_token.soft_split0(x).transpose(1, 2))
        _, q, _ = torch.split(block.kqv(h), block.emb, dim=-1)
        assert float(block.features(q).amax()) == 0.0  # every feature underflows: denominators are 0
        expected = model(x).numpy()
    assert np.isfinite(expected).all()
    config = ExportConfig("t2t_vit_7", input_size=(3, 64, 64), img_size=64, num_classes=10)
    path = export_model(model, tmp_path / "m.onnx", config)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": x.numpy()})
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_checkpoint_export_verifies_against_the_same_weights(tmp_path: Path) -> None:
    from vitrt.models import create_model

    ckpt = tmp_path / "w.pth.tar"
    torch.manual_seed(7)
    torch.save({"state_dict_ema": create_model("t2t_vit_7", img_size=64).state_dict()}, ckpt)
    out = tmp_path / "m.onnx"
    assert main(["export", "t2t_vit_7", "--img-size", "64", "--checkpoint", str(ckpt), "-o", str(out)]) == 0
    assert main(["verify", str(out)]) == 0
    ckpt.write_bytes(ckpt.read_bytes() + b"\0")  # the checkpoint changes after export
    assert main(["verify", str(out)]) == 2


def test_export_onnx_of_a_module_loads_its_checkpoint_into_a_copy(tmp_path: Path) -> None:
    import vitrt

    torch.manual_seed(7)
    ckpt = tmp_path / "w.pth.tar"
    torch.save({"state_dict_ema": vitrt.create_model("t2t_vit_7", img_size=64).state_dict()}, ckpt)
    module = vitrt.create_model("t2t_vit_7", img_size=64)  # other weights
    head = module.head.weight.detach().clone()
    path = vitrt.export_onnx(module, tmp_path / "m.onnx", img_size=64, checkpoint=ckpt, batch=None)  # a Path
    assert torch.equal(module.head.weight, head)  # the caller's module is left as it was
    config = read_export_config(onnx.load(str(path)))
    assert config is not None
    assert (config.model, config.checkpoint, config.batch) == ("t2t_vit_7", str(ckpt), None)
    assert config.module_sha256 is not None  # the rebuilt model must match it, and does
    report, feeds, _ = vitrt.verify_onnx(path, batch=2, save_inputs=tmp_path / "in.json")
    assert report.passed, report.format()  # the rebuilt model holds the checkpoint's weights
    again, _, _ = vitrt.verify_onnx(path, inputs=tmp_path / "in.json")
    assert again.passed and again.iterations == len(feeds) == 1


def test_a_module_exports_at_its_own_size_and_verify_refuses_weights_it_cannot_rebuild(
    tmp_path: Path,
) -> None:
    import vitrt
    from vitrt.compiler.verify import save_outputs

    classes = int(np.random.default_rng().integers(2, 20))
    torch.manual_seed(int(np.random.default_rng().integers(1, 2**31)))  # weights from torch's global RNG
    module = vitrt.create_model("deit_tiny_patch16_224", img_size=32, num_classes=classes)
    path = vitrt.export_onnx(module, tmp_path / "m.onnx")  # img_size and num_classes: the module's own
    proto = onnx.load(str(path))
    config = read_export_config(proto)
    assert config is not None and (config.img_size, config.num_classes, config.seed) == (32, classes, 0)
    assert [d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == [1, classes]
    with pytest.raises(
        VitrtError,
        match=r"^the PyTorch model cannot be rebuilt: deit_tiny_patch16_224 built from the export config "
        r"\(seed 0\) has other weights or modules than the module that was exported.* Fix: export with "
        r"checkpoint=",
    ):
        vitrt.verify_onnx(path)
    # the fix it names: compare with the module's own outputs
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        save_outputs([{"logits": module(x).numpy()}], tmp_path / "ref.json", "torch")
    report, _, _ = vitrt.verify_onnx(path, against=tmp_path / "ref.json", inputs={"images": x.numpy()})
    assert report.passed and report.iterations == 1, report.format()
    # a module of a class vitrt does not register cannot be rebuilt at all
    with pytest.raises(
        VitrtError, match=r"^the PyTorch model cannot be rebuilt: 'Net' is not a registered model .* Fix:"
    ):
        model_from_config(ExportConfig("Net"))


def test_export_onnx_refuses_what_the_model_cannot_take_before_any_work(tmp_path: Path) -> None:
    import vitrt

    module = vitrt.create_model("t2t_vit_7", img_size=32, num_classes=10)
    for options, message in [
        (
            {"img_size": 64},
            r"^the module was built with img_size 32; img_size=64 does not apply to a built module",
        ),
        (
            {"num_classes": 1000},
            r"^the module was built with num_classes 10; num_classes=1000 does not apply",
        ),
        ({"batch": "1"}, r"^batch must be a whole number >= 1 or None \(a dynamic batch axis\), got '1'$"),
        ({"opset": 18.0}, r"^opset must be a whole number >= 18, got 18.0$"),
        ({"checkpoint": 3}, r"^checkpoint must be a file path \(str or Path\), got int$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            vitrt.export_onnx(module, tmp_path / "m.onnx", **options)  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"^img_size 33 is not a positive multiple of the patch size 16; use 32"
    ):
        vitrt.export_onnx("deit_tiny_patch16_224", tmp_path / "m.onnx", img_size=33)
    with pytest.raises(ConfigError, match=r"^num_classes must be a whole number >= 0 .*got '10'$"):
        vitrt.export_onnx("deit_tiny_patch16_224", tmp_path / "m.onnx", img_size=32, num_classes="10")  # type: ignore[arg-type]
    with pytest.raises(
        ConfigError, match=r"^export_onnx takes a model name .* or an nn.Module, got PosixPath"
    ):
        vitrt.export_onnx(tmp_path / "w.pth", tmp_path / "m.onnx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_failing_export_onnx_names_the_cause_without_torchs_trace_logs(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    import vitrt

    # any length but the 16 tokens of a 4 x 4 input (with which it would broadcast and export)
    width = int(np.random.default_rng().choice([w for w in range(5, 30) if w != 16]))

    class Mismatched(torch.nn.Module):  # its tokens broadcast against a table of the wrong length
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.zeros(1, width, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x.flatten(2).transpose(1, 2) + self.table).mean(1)

    with pytest.raises(VitrtError, match=f"ONNX export of Mismatched failed: .*dimension of length {width}"):
        vitrt.export_onnx(Mismatched(), tmp_path / "m.onnx", img_size=4)
    printed = capfd.readouterr()
    assert "Traceback" not in printed.err and "fake_tensor" not in printed.err
    assert list(tmp_path.iterdir()) == []


def test_polygraphy_json_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _export(tmp_path, "deit_tiny_patch16_224", 64)
    inputs, outputs = tmp_path / "inputs.json", tmp_path / "outputs.json"
    argv = [
        "verify",
        str(path),
        "--iterations",
        "2",
        "--save-inputs",
        str(inputs),
        "--save-outputs",
        str(outputs),
    ]
    assert main(argv) == 0
    feeds = load_inputs(inputs)
    runner, results = load_outputs(outputs)
    assert (
        len(feeds) == 2
        and feeds[0]["images"].shape == (1, 3, 64, 64)
        and feeds[0]["images"].dtype == np.float32
    )
    assert runner == "onnxrt-runner-N0" and results[1]["logits"].shape == (1, 1000)
    assert main(["verify", str(path), "--against", str(outputs), "--load-inputs", str(inputs)]) == 0
    assert "max abs 0.000e+00" in capsys.readouterr().out
    # The saved outputs belong to those inputs: other inputs must fail the comparison (exit 1).
    other = tmp_path / "other.json"
    save_inputs([{"images": f["images"][:, ::-1].copy()} for f in feeds], other)  # channels swapped
    capsys.readouterr()
    assert (
        main(["verify", str(path), "--against", str(outputs), "--load-inputs", str(other), "--atol", "1e-4"])
        == 1
    )
    assert "FAIL" in capsys.readouterr().out


def test_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="unknown lowering 'fancy'; use one of plugin, portable"):
        ExportConfig("t2t_vit_7", lowering="fancy").validate()
    with pytest.raises(ConfigError, match="opset 13 is too old"):
        ExportConfig("t2t_vit_7", opset=13).validate()
    with pytest.raises(
        ConfigError,
        match=r"input_size \(3, 224, 224\) does not match img_size 64: .* give "
        r"input_size=\(3, 64, 64\)",
    ):
        ExportConfig("t2t_vit_7", img_size=64).validate()
    text = tmp_path / "notes.onnx"
    text.write_text("hello")
    with pytest.raises(VitrtError, match="is not an ONNX model"):
        verify_onnx(text)
    assert main(["export", "t2t_vit_7", "-o", str(tmp_path / "missing" / "m.onnx")]) == 2
    assert "does not exist (create it first)" in capsys.readouterr().err
    assert main(["verify", str(tmp_path / "absent.onnx")]) == 2


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.linalg.eigvals(x[0, 0]).real  # not exportable to ONNX

    with pytest.raises(VitrtError, match="ONNX export of broken failed"):
        export_model(Broken(), tmp_path / "m.onnx", ExportConfig("broken", input_size=(3, 8, 8), img_size=8))
    assert list(tmp_path.iterdir()) == []
