"""TensorRT calibration cache: header, hex float32 scales, bit-exact round trip, atomic writes."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from vitrt.calibration.cache import (
    decode_scale,
    dumps,
    encode_scale,
    format_header,
    loads,
    read_cache,
    trt_version_number,
    write_cache,
)
from vitrt.calibration.errors import CacheError


def _bits(value: float) -> int:
    return int(struct.unpack(">I", struct.pack(">f", value))[0])


def test_header_format_and_version_numbers() -> None:
    assert trt_version_number("10.3.0") == 100300  # JetPack 6.1/6.2
    assert trt_version_number("10.13.3.9") == 101303  # JetPack 7 (build number ignored)
    assert trt_version_number("8.6.1") == 8601
    assert trt_version_number("7.1.3") == 7103
    assert format_header("10.3.0") == "TRT-100300-EntropyCalibration2"
    assert re.fullmatch(r"TRT-\d+-EntropyCalibration2", format_header("10.16.0"))
    with pytest.raises(CacheError):
        format_header("10.3.0", algorithm="Entropy")


def test_scale_encoding_matches_published_caches() -> None:
    # "images: 3c010204 -> scale 0.007874 = 1/127" (an input on [0, 1]); "data: 3c008912"
    assert encode_scale(1.0 / 127.0) == "3c010204"
    assert decode_scale("3c010204") == pytest.approx(1.0 / 127.0, rel=1e-7)
    assert decode_scale("3c008912") == pytest.approx(0.0078452, rel=1e-4)
    assert decode_scale("3F800000") == 1.0  # upper-case hex is read too
    assert encode_scale(2.0) == "40000000" and len(encode_scale(1e-30)) == 8


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # random float32 bit patterns over the whole positive normal range, plus typical scales
    bits = rng.integers(0x00800000, 0x7F800000, size=500, dtype=np.uint32)
    scales = bits.view(np.float32).tolist() + (rng.random(100).astype(np.float32) * 0.1 + 1e-6).tolist()
    names = [f"/blocks.{i}/attn/MatMul_output_0" for i in range(len(scales))]
    names[0] = "input_1:0"  # TensorFlow-style names contain ':'
    names[1] = "(Unnamed Layer* 8) [Constant]_output"
    table = dict(zip(names, scales, strict=True))
    path = write_cache(tmp_path / "model.calib.cache", table, trt_version="10.3.0")
    text = path.read_text()
    assert text.splitlines()[0] == "TRT-100300-EntropyCalibration2"
    assert text.splitlines()[1] == f"input_1:0: {struct.pack('>f', scales[0]).hex()}"
    assert text.endswith("\n")
    parsed = read_cache(path)
    assert parsed.version == 100300 and parsed.algorithm == "EntropyCalibration2"
    assert list(parsed.scales) == names
    assert [_bits(v) for v in parsed.scales.values()] == [_bits(v) for v in scales]
    assert dumps(parsed.scales, trt_version=parsed.version) == text  # and back to the same text
    assert parsed.amaxes()["input_1:0"] == pytest.approx(scales[0] * 127.0)


def test_parse_rejects_malformed_caches() -> None:
    with pytest.raises(CacheError, match="empty"):
        loads("")
    with pytest.raises(CacheError, match="not a TensorRT calibration header"):
        loads("EntropyCalibration2\nx: 3c010204\n")
    with pytest.raises(CacheError, match="line 3"):
        loads("TRT-100300-EntropyCalibration2\nx: 3c010204\ny 3c010204\n")
    with pytest.raises(CacheError, match=r"line 2.*not the hex"):
        loads("TRT-100300-EntropyCalibration2\nx: 0.0078\n")
    with pytest.raises(CacheError, match="appears twice"):
        loads("TRT-100300-EntropyCalibration2\nx: 3c010204\nx: 3c010204\n")
    with pytest.raises(CacheError, match="not a text file"):
        loads(b"\xff\xfe\x00engine")
    # blank lines are tolerated; TensorRT 8 headers parse too
    assert loads("TRT-8601-EntropyCalibration2\n\nx: 3c010204\n").scales == {"x": decode_scale("3c010204")}


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), 1e39])
def test_invalid_scales_write_nothing(tmp_path: Path, bad: float) -> None:
    path = tmp_path / "calib.cache"
    with pytest.raises(CacheError, match="'t1'"):
        write_cache(path, {"t0": 0.01, "t1": bad}, trt_version="10.3.0")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_cache(tmp_path / "calib.cache", {"x": 0.5}, trt_version="10.3.0")
    before = path.read_bytes()

    def failing_replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CacheError, match="No space left"):
        write_cache(path, {"x": 0.25, "y": 1.0}, trt_version="10.3.0")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["calib.cache"]


def test_write_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="does not exist"):
        write_cache(tmp_path / "missing" / "calib.cache", {"x": 0.5}, trt_version="10.3.0")
    with pytest.raises(CacheError, match="is a folder"):
        write_cache(tmp_path, {"x": 0.5}, trt_version="10.3.0")
    with pytest.raises(CacheError, match="cannot read"):
        read_cache(tmp_path / "nothing.cache")
