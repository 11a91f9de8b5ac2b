"""What the profiler records beside the timings: peak memory, device telemetry, per-layer times.

Telemetry and per-layer profiles come from their own modules (``vitrt.deploy.telemetry``:
``TelemetrySampler``; ``vitrt.deploy.layer_runs``: per-layer records grouped by block). Neither may fail a
profile: where one cannot record, the profile says "not recorded" and why. Hook points: ``TelemetryHook``
and ``layer_groups``.
"""

from __future__ import annotations

import resource
import sys
import threading
import time
from types import TracebackType
from typing import Any

MIB = 2**20


class TelemetryHook:
    """Context manager around a profile: ``vitrt.deploy.telemetry.TelemetrySampler(threads=)`` entered where
    that module exists and ``enabled``; ``begin()`` / ``end(inferences)`` mark the timed window (its energy
    per inference); ``record`` is then ``{"recorded": True, **DeviceState.to_dict()}``, else
    ``{"recorded": False, "reason": ...}``. A sampler that fails never fails the profile (the reason is
    recorded instead)."""

    def __init__(self, enabled: bool = True, *, threads: int | None = None) -> None:
        self.enabled = enabled
        self.threads = threads
        self.record: dict[str, Any] = {"recorded": False, "reason": "telemetry not asked for"}
        self._sampler: Any = None

    def __enter__(self) -> TelemetryHook:
        if not self.enabled:
            return self
        try:
            from vitrt.deploy.telemetry import TelemetrySampler
        except ImportError as err:
            self.record = {"recorded": False, "reason": f"vitrt.deploy.telemetry is not available ({err})"}
            return self
        try:
            sampler = TelemetrySampler(threads=self.threads)
            sampler.__enter__()
            self._sampler = sampler
        except Exception as err:  # a sampler's tools missing (nvidia-smi, tegrastats): say so, keep profiling
            self.record = {"recorded": False, "reason": f"telemetry sampler failed to start: {err}"}
        return self

    def _call(self, method: str, *args: Any) -> None:
        hook = getattr(self._sampler, method, None)
        if hook is None:
            return
        try:
            hook(*args)
        except Exception as err:  # as in __enter__: recorded, not raised
            self.record = {"recorded": False, "reason": f"telemetry sampler failed in {method}: {err}"}
            self._sampler = None

    def begin(self) -> None:
        """The timed window starts (``TelemetrySampler.begin_timed``)."""
        self._call("begin_timed")

    def end(self, inferences: int) -> None:
        """The timed window ended after ``inferences`` images (``TelemetrySampler.end_timed``)."""
        self._call("end_timed", inferences)

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sampler is None:
            return
        try:
            self._sampler.__exit__(kind, err, tb)
            state = self._sampler.result()
            self.record = {"recorded": True, **state.to_dict()}
        except Exception as exc:  # as in __enter__: recorded, not raised
            self.record = {"recorded": False, "reason": f"telemetry sampler failed: {exc}"}


def layer_groups(runner: Any, feed: dict[str, Any]) -> tuple[Any, str | None]:
    """(the runner's per-layer profile, None), or (None, why not): ``vitrt.deploy.layer_runs.profile_layers``,
    a separate run after the timed one (per-layer timing slows execution), grouped by model block."""
    from .layer_runs import LayersNotAvailable, profile_layers

    try:
        return profile_layers(runner, feed), None
    except LayersNotAvailable as err:
        return None, f"per-layer profile not recorded: {err}"
    except Exception as err:  # a profiler that fails must not cost the user the timed run's figures
        return None, f"per-layer profile not recorded: it failed ({type(err).__name__}: {err})"


def process_maxrss_mib() -> float:
    """This process's resident-set high-water mark since it started (``getrusage``), in MiB.

    The kernel keeps it from approximate per-CPU RSS counters and updates it lazily (Linux documents
    VmHWM as inaccurate), so it can read a few pages below ``PeakRss``'s sampled peak of the same run."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MIB if sys.platform == "darwin" else peak * 1024 / MIB  # bytes on macOS, KiB on Linux


class PeakRss:
    """Samples this process's RSS every ``interval_s`` in a thread (psutil) while entered: ``peak_mib`` and
    ``start_mib``. Without psutil only ``getrusage``'s process-lifetime high-water mark is known."""

    def __init__(self, interval_s: float = 0.01) -> None:
        self.interval_s = interval_s
        self.start_mib: float | None = None
        self.peak_mib: float | None = None
        self.method = "getrusage ru_maxrss (process lifetime high-water)"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._process: Any = None

    def __enter__(self) -> PeakRss:
        try:
            import psutil
        except ImportError:
            return self
        self._process = psutil.Process()
        self.start_mib = self.peak_mib = self._process.memory_info().rss / MIB
        self.method = f"psutil RSS sampled every {self.interval_s * 1e3:.0f} ms during the timed window"
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = self._process.memory_info().rss / MIB
            self.peak_mib = max(self.peak_mib or 0.0, rss)
            time.sleep(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            rss = self._process.memory_info().rss / MIB
            self.peak_mib = max(self.peak_mib or 0.0, rss)


class DeviceMemory:
    """Peak device memory of a CUDA runner while entered: torch's ``max_memory_allocated`` (what torch's
    allocator handed out: buffers, PyTorch activations) and the drop in ``cudaMemGetInfo``'s free memory
    (anything allocated on the device, TensorRT's own activation memory included) between entry and exit.
    On a host runner: nothing (``record`` says so)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.record: dict[str, Any] = {
            "device_peak_mib": None,
            "device_note": "host runner: no device memory",
        }
        self._free0 = 0

    def __enter__(self) -> DeviceMemory:
        if not self.device.startswith("cuda"):
            return self
        import torch

        if not torch.cuda.is_available():  # a TensorRT runner beside a CPU build of torch
            self.device = "none"
            self.record = {"device_peak_mib": None, "device_note": "not recorded: torch has no CUDA here"}
            return self
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._free0 = int(torch.cuda.mem_get_info(self.device)[0])
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.device.startswith("cuda"):
            return
        import torch

        torch.cuda.synchronize(self.device)
        free1 = int(torch.cuda.mem_get_info(self.device)[0])
        self.record = {
            "device_peak_mib": torch.cuda.max_memory_allocated(self.device) / MIB,
            "device_free_drop_mib": (self._free0 - free1) / MIB,
            "device_note": "torch.cuda.max_memory_allocated; free-memory drop from cudaMemGetInfo",
        }
