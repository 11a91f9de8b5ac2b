"""Latency profiling of any runner with trtexec's definitions (``profile_runner``).

Per query (one batch), following trtexec (ARCHITECTURE.md section 9):

- *Enqueue time*: host time of ``runner.enqueue()``;
- *GPU compute time*: CUDA events on torch's current stream around the enqueue (GPU runners only);
- *Latency*: H2D + compute + D2H, the transfers (``runner.prepare`` / ``runner.fetch``, host-timed) only
  with ``include_data_transfers``; compute is the GPU compute time on a GPU runner and the host time from
  enqueue to ``synchronize()`` returning on a host runner (where latency = compute: there are no transfers);
- *Throughput*: queries / host wall time from the first timed query's start to the last one's end.

Time-based warm-up (200 ms) and duration (3 s, at least 10 queries). Unset options take the defaults of the
trtexec line named by ``trtexec_defaults``: "11" (TensorRT 11: no transfers, CUDA graph, spin-wait) or "10"
(transfers included, no graph, blocking sync); the result records which applied. Queries run one after
another (trtexec enqueues one ahead, so its latency can look lower than an application's).

Besides: an end-to-end figure (image file to logits: decode + resize + normalise a synthetic PNG per
image of the batch through ``vitrt run``'s pipeline, then the query), peak host RSS and device memory,
device telemetry and per-block times where their modules exist (``vitrt.deploy.hooks``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from vitrt.errors import VitrtError

from .hooks import DeviceMemory, PeakRss, TelemetryHook, layer_groups, process_maxrss_mib
from .latency import latency_stats
from .results import ProfileResult
from .runners import check_feed, runner_device
from .trtexec_format import QueryTrace, times_stats

DEFAULT_WARMUP_S = 0.2
DEFAULT_DURATION_S = 3.0
DEFAULT_MIN_ITERATIONS = 10
DEFAULT_E2E_S = 1.0
TRTEXEC_DEFAULTS: dict[str, dict[str, bool]] = {
    "11": {"include_data_transfers": False, "cuda_graph": True, "spin_wait": True},
    "10": {"include_data_transfers": True, "cuda_graph": False, "spin_wait": False},
}
"""trtexec's defaults per TensorRT line (11 flipped all three)."""
E2E_IMAGE_SIZE = (480, 640)
"""Height x width in pixels of the synthetic PNG the end-to-end figure decodes (a VGA photo)."""


def random_feed(
    specs: list[Any], batch: int, rng: np.random.Generator | None = None
) -> dict[str, np.ndarray]:
    """Fresh normal(0, 1) inputs for ``specs`` (``TensorSpec``s) with the batch axis set to ``batch``;
    VitrtError for another dynamic axis (its size is unknown)."""
    rng = rng or np.random.default_rng()
    feed = {}
    for spec in specs:
        shape = []
        for i, d in enumerate(spec.shape):
            if i == 0:
                shape.append(batch)
            elif isinstance(d, int) and d > 0:
                shape.append(d)
            else:
                raise VitrtError(
                    f"input {spec.name!r} has shape {list(spec.shape)}: axis {i} is dynamic, so the profile "
                    "cannot choose its size. Fix: export with a fixed input size"
                )
        dtype = np.dtype(spec.dtype) if spec.dtype not in ("undefined", "") else np.dtype(np.float32)
        feed[spec.name] = rng.standard_normal(shape).astype(dtype)
    return feed


def gpu_name(device: str) -> str:
    """The GPU's name from torch where torch has CUDA, else the device string (a TensorRT runner on
    cuda-python next to a CPU build of torch)."""
    try:
        import torch

        if torch.cuda.is_available():
            return str(torch.cuda.get_device_name(device))
    except (ImportError, RuntimeError):
        pass
    return device


def trtexec_line(value: Any) -> str:
    """``trtexec_defaults`` as its key in TRTEXEC_DEFAULTS ("11" or "10"; the int 11 or 10 too); VitrtError
    for another value."""
    line = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(line, str) or line not in TRTEXEC_DEFAULTS:
        raise VitrtError(
            f"trtexec_defaults must be one of {', '.join(map(repr, TRTEXEC_DEFAULTS))} (the TensorRT line "
            f"whose trtexec defaults apply), not {value!r}"
        )
    return line


def check_number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False) -> None:
    """VitrtError unless ``value`` is a number (an int with ``integer``) of at least ``minimum``: said before
    any work, not as a TypeError from a comparison deep inside."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value >= minimum:
        what = "an integer" if integer else "a number"
        raise VitrtError(f"{name} must be {what} >= {minimum:g}, got {value!r}")


def _resolve(value: bool | None, key: str, line: str, applied: list[str]) -> bool:
    if value is None:
        applied.append(key)
        return TRTEXEC_DEFAULTS[line][key]
    return bool(value)


def _progress(total_s: float, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=round(total_s, 1),
        unit="s",
        desc=desc,
        disable=not enabled or not sys.stderr.isatty(),
        leave=False,
        file=sys.stderr,
    )


def synthetic_png(folder: Path, size: tuple[int, int] = E2E_IMAGE_SIZE, seed: int = 0) -> Path:
    """A smooth random RGB image of ``size`` (height, width) written as PNG in ``folder``."""
    from vitrt.calibration.data import _pil, synthetic_image

    pixels = synthetic_image(0, seed, (3, *size)).permute(1, 2, 0).numpy()
    path = folder / "synthetic.png"
    _pil().fromarray((pixels * 255).round().astype(np.uint8)).save(path)
    return path


def _end_to_end(
    runner: Any, preprocess: Any, batch: int, duration_s: float, iterations: int
) -> tuple[Any, Any]:
    """(e2e, preprocess) LatencyStats of queries from image file to logits (module docstring)."""
    from .predict import load_image

    name = runner.input_specs[0].name
    dtype = (
        np.dtype(runner.input_specs[0].dtype) if runner.input_specs[0].dtype != "undefined" else np.float32
    )
    total: list[float] = []
    prep: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        png = synthetic_png(Path(tmp))
        start = time.perf_counter()
        while len(total) < iterations or time.perf_counter() - start < duration_s:
            t0 = time.perf_counter()
            x = np.stack([load_image(png, preprocess) for _ in range(batch)]).astype(dtype)
            t1 = time.perf_counter()
            runner.infer({name: x})
            t2 = time.perf_counter()
            prep.append((t1 - t0) * 1e3)
            total.append((t2 - t0) * 1e3)
    return latency_stats(total), latency_stats(prep)


def profile_runner(
    runner: Any,
    *,
    batch: int = 1,
    feed: dict[str, np.ndarray] | None = None,
    warmup_s: float = DEFAULT_WARMUP_S,
    duration_s: float = DEFAULT_DURATION_S,
    iterations: int = DEFAULT_MIN_ITERATIONS,
    include_data_transfers: bool | None = None,
    cuda_graph: bool | None = None,
    spin_wait: bool | None = None,
    trtexec_defaults: str = "11",
    e2e_s: float = DEFAULT_E2E_S,
    preprocess: Any = None,
    telemetry: bool = True,
    layers: bool = True,
    progress: bool = True,
    source: str = "",
) -> ProfileResult:
    """Profile ``runner`` (``vitrt.deploy.runners.Runner``) the trtexec way (module docstring).

    batch: images per query; feed: the inputs (default: fresh random normal(0, 1) arrays for
    ``runner.input_specs``, drawn once per call); warmup_s / duration_s (s) / iterations (at least):
    as trtexec. include_data_transfers / cuda_graph / spin_wait: None takes ``trtexec_defaults``'s value
    ("11" or "10"); cuda_graph is recorded, not applied (a runner captures graphs when it is built:
    ``TorchModelRunner(cuda_graph=True)``; a mismatch is noted); on a host runner all three are "n/a".
    e2e_s: seconds (at least ``iterations`` queries) of the end-to-end figure, 0 to skip; preprocess: its
    ``PreprocessConfig`` (None: skipped, noted). telemetry / layers: record them where available (hooks).
    progress: a bar on stderr while it runs (only when stderr is a terminal). source: what was opened.

    A GPU runner with its own events (``enqueue(timed=True)`` / ``last_compute_ms()``: the TensorRT runner)
    times its stream itself and waits with its own ``synchronize`` (its ``spin_wait`` set from ``spin_wait``);
    others (PyTorch on CUDA) get CUDA events on torch's current stream.

    Returns a ProfileResult whose ``times`` holds one ``QueryTrace`` per timed query (trtexec's
    ``--exportTimes`` records, ``vitrt.deploy.trtexec_format``); every statistic is computed from them.
    """
    trtexec_defaults = trtexec_line(trtexec_defaults)
    check_number("warmup_s", warmup_s)
    check_number("duration_s", duration_s)
    check_number("e2e_s", e2e_s)
    check_number("iterations", iterations, minimum=1, integer=True)
    check_number("batch", batch, minimum=1, integer=True)
    device = runner_device(runner)
    gpu = device.startswith("cuda")
    applied: list[str] = []
    transfers = _resolve(include_data_transfers, "include_data_transfers", trtexec_defaults, applied)
    want_graph = _resolve(cuda_graph, "cuda_graph", trtexec_defaults, applied)
    spin = _resolve(spin_wait, "spin_wait", trtexec_defaults, applied)
    notes: list[str] = []
    if not gpu:  # the three are GPU settings: no default applied to a host runner, an explicit one is noted
        applied = []
        given = [
            k
            for k, v in (
                ("include_data_transfers", include_data_transfers),
                ("cuda_graph", cuda_graph),
                ("spin_wait", spin_wait),
            )
            if v
        ]
        if given:
            notes.append(f"{', '.join(given)} asked for: not applicable to a host runner (no device)")
    has_graph = bool(getattr(runner, "cuda_graph", False))
    if gpu and want_graph != has_graph:
        notes.append(
            f"CUDA graph {'asked for' if want_graph else 'off asked for'} but this runner "
            f"{'replays one' if has_graph else 'has none'}: timed as the runner is"
        )
    if not gpu:
        transfers = False  # nothing to transfer: latency = compute on a host runner
    feed = feed if feed is not None else random_feed(runner.input_specs, batch)
    # names and shapes once, before the warm-up (dtypes: a PyTorch runner casts its input itself)
    check_feed(runner.name, runner.input_specs, feed, dtypes=False)

    torch_mod: Any = None
    if gpu and not hasattr(runner, "last_compute_ms"):
        import torch as torch_mod

    runner.prepare(feed)
    start = time.perf_counter()
    while True:  # warm-up: includes a CUDA graph capture on the first call
        if transfers:
            runner.prepare(feed)
        runner.enqueue()
        runner.synchronize()
        if transfers:
            runner.fetch()
        if time.perf_counter() - start >= warmup_s:
            break

    own_events = hasattr(runner, "last_compute_ms")  # the TensorRT runner times its own stream
    if gpu and hasattr(runner, "spin_wait"):
        runner.spin_wait = spin
    traces: list[QueryTrace] = []
    bar = _progress(duration_s, f"profiling {runner.name}", progress)
    threads = getattr(runner, "threads", None)
    with TelemetryHook(telemetry, threads=threads) as tele, PeakRss() as rss, DeviceMemory(device) as devmem:
        origin = time.perf_counter()
        tele.begin()
        while True:
            t0 = time.perf_counter()
            if transfers:
                runner.prepare(feed)
                runner.synchronize()  # the host -> device copies done before the compute starts
            t1 = time.perf_counter()
            if gpu and not own_events:
                begin = torch_mod.cuda.Event(enable_timing=True)
                end = torch_mod.cuda.Event(enable_timing=True)
                begin.record()
            t2 = time.perf_counter()
            if own_events:
                runner.enqueue(timed=True)
            else:
                runner.enqueue()
            t3 = time.perf_counter()
            if gpu and not own_events:
                end.record()
                if spin:
                    while not end.query():
                        pass
                else:
                    end.synchronize()
            else:
                runner.synchronize()
            t4 = time.perf_counter()
            if transfers:
                runner.fetch()
            t5 = time.perf_counter()
            if own_events:
                compute = float(runner.last_compute_ms())
            elif gpu:
                compute = float(begin.elapsed_time(end))
            else:
                compute = (t4 - t2) * 1e3
            ms = [(t - origin) * 1e3 for t in (t0, t1, t2, t3, t4, t5)]
            end_compute = ms[2] + compute
            traces.append(
                QueryTrace(
                    start_enq_ms=ms[2],
                    end_enq_ms=ms[3],
                    start_h2d_ms=ms[0] if transfers else ms[2],
                    end_h2d_ms=ms[1] if transfers else ms[2],
                    start_compute_ms=ms[2],
                    end_compute_ms=end_compute,
                    start_d2h_ms=ms[4] if transfers else end_compute,
                    end_d2h_ms=ms[5] if transfers else end_compute,
                )
            )
            last_end = t5
            elapsed = t5 - origin
            bar.n = round(min(elapsed, duration_s), 1)
            bar.refresh()
            if elapsed >= duration_s and len(traces) >= iterations:
                break
        tele.end(len(traces) * int(next(iter(feed.values())).shape[0]))
    bar.close()
    wall = last_end - origin
    notes += [str(n) for n in getattr(runner, "notes", [])]
    per_layer, why_no_layers = (
        layer_groups(runner, feed) if layers else (None, "per-layer profile not asked for")
    )
    if per_layer is not None:
        notes += [f"per-layer profile: {per_layer.method}, {per_layer.iterations} runs", *per_layer.notes]
    elif why_no_layers:
        notes.append(why_no_layers)
    if not tele.record.get("recorded"):
        notes.append(f"telemetry not recorded: {tele.record.get('reason')}")

    e2e = prep = None
    if e2e_s > 0 and preprocess is not None:
        e2e, prep = _end_to_end(runner, preprocess, batch, e2e_s, iterations)
    elif e2e_s > 0:
        notes.append("end-to-end time not measured: the model does not record its preprocessing")

    settings: dict[str, Any] = {
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "min_iterations": iterations,
        "include_data_transfers": transfers if gpu else "n/a (host runner: latency = compute)",
        "cuda_graph": has_graph if gpu else "n/a (host runner)",
        "spin_wait": spin if gpu else "n/a (host runner)",
        "sync": ("spin on event query" if spin else "blocking event synchronize")
        if gpu
        else "host call returns",
    }
    for key in ("runtime", "threads", "inference_precision", "precision"):
        value = getattr(runner, key, None)
        if value is not None:
            settings[key] = value
    src = getattr(runner, "source", None)
    manifest = getattr(src, "manifest", None)
    if manifest is not None:
        settings.setdefault("runtime", manifest.runtime.get("name"))
        settings.setdefault("precision", manifest.precision)
        if manifest.runtime.get("inference_precision"):
            settings.setdefault("inference_precision", manifest.runtime.get("inference_precision"))
    if hasattr(runner, "dtype"):
        settings.setdefault("precision", "fp16" if "16" in str(runner.dtype) else "fp32")
    defaults = {
        "trtexec": trtexec_defaults,
        "values": dict(TRTEXEC_DEFAULTS[trtexec_defaults]),
        "applied": applied,
    }
    memory = {
        "host_peak_rss_mib": rss.peak_mib,
        "host_start_rss_mib": rss.start_mib,
        "host_process_maxrss_mib": process_maxrss_mib(),
        "host_method": rss.method,
        **devmem.record,
    }
    if gpu:
        name = gpu_name(device)
    else:
        import os

        name = f"cpu ({os.cpu_count()} cores)"
    stats = times_stats(traces)
    return ProfileResult(
        runner=runner.name,
        device=name,
        batch=int(next(iter(feed.values())).shape[0]),
        latency=stats["latency"],
        enqueue=stats["enqueue"],
        gpu_compute=stats["compute"] if gpu else None,
        throughput_qps=len(traces) / wall if wall > 0 else float("inf"),
        settings=settings,
        source=source,
        wall_s=wall,
        h2d=stats["h2d"] if transfers else None,
        d2h=stats["d2h"] if transfers else None,
        e2e=e2e,
        preprocess=prep,
        defaults=defaults,
        memory=memory,
        layers=per_layer.block_ms() if per_layer is not None else None,
        layer_profile=per_layer,
        telemetry=tele.record,
        notes=notes,
        times=traces,
    )
