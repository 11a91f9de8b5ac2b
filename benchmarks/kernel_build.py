"""Wall time of building both kernel fatbins (``vitrt plugins build --force``) with every nvcc process on
every core against each on a share of the cores (cores // jobs, vitrt's earlier default), both in this run.

    .venv/bin/python benchmarks/kernel_build.py [--jobs 2]

Each way builds DEFAULT_ARCHS' cubins and the PTX of both sources into its own temporary folder, in the
order share, all, all, share; each way's time is the smaller of its two. The ratio is all's over share's.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

from vitrt.plugins.cuda_build import build_fatbins, find_cuda_home, nvcc_version


def build_seconds(threads: int, jobs: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_fatbins(Path(tmp), force=True, jobs=jobs, threads=threads)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    share, every = max(1, cores // args.jobs), cores
    version = nvcc_version(find_cuda_home())
    print(f"{platform.machine()}, {cores} cores, nvcc {version}, {args.jobs} nvcc processes at once")
    order = (share, every, every, share)
    seconds = [build_seconds(threads, args.jobs) for threads in order]
    old, new = min(seconds[0], seconds[3]), min(seconds[1], seconds[2])
    print(f"threads per nvcc {share} (a share): {old:.1f} s; {every} (every core): {new:.1f} s")
    print(f"ratio {new / old:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
