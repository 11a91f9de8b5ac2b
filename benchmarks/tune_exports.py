"""``vitrt tune`` wall time with one export per fusion and attention (shared by trials that differ only in
precision) against one export per trial, both in this run.

    .venv/bin/python benchmarks/tune_exports.py [--trials 8] [--seed 0] [--jobs 2] [--repeats 2]

Runs ``vitrt.tune`` on the shipped digits T2T-ViT (``benchmarks/digits``) over the seeded sample of
``--trials`` configurations (both baselines included), ``--repeats`` times each way, alternating (shared,
per trial, shared, ...). "Per trial" is the search before exports were shared: ``export_key`` is replaced by
the trial's name, so every trial exports its own file. Prints each run's wall seconds and exports, then the
median of each way and the ratio shared / per trial. The latency phase (``--iterations`` timed calls per
trial) is the same both ways.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import vitrt
import vitrt.compiler.tune_trial as tune_trial
from vitrt.compiler.tune import space_facts
from vitrt.compiler.tune_model import resolve_model
from vitrt.compiler.tune_space import TrialConfig, sample_trials

DIGITS_T2T = Path(__file__).resolve().parent / "digits" / "digits_t2t_vit.safetensors"
SHARED_KEY = tune_trial.export_key


def per_trial_key(config: TrialConfig) -> str:
    return config.name


def run(configs: list[TrialConfig], shared: bool, args: argparse.Namespace) -> float:
    tune_trial.export_key = SHARED_KEY if shared else per_trial_key  # read by tune() at each call
    try:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            result = vitrt.tune(
                str(DIGITS_T2T),
                latency_budget=1000.0,
                configs=configs,
                output=out,
                jobs=args.jobs,
                eval_samples=args.eval_samples,
                calib_samples=args.calib_samples,
                iterations=args.iterations,
            )
            seconds = time.perf_counter() - start
    finally:
        tune_trial.export_key = SHARED_KEY
    ok = sum(t["status"] == "ok" for t in result.trials)
    exports = len({tune_trial.export_key(c) if shared else c.name for c in configs})
    print(f"{'shared' if shared else 'per trial':10} {seconds:8.1f} s  {exports:2d} exports  {ok} trials ok")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--eval-samples", type=int, default=100)
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args(argv)
    source = resolve_model(str(DIGITS_T2T))
    configs = sample_trials(space_facts(source.build()), args.trials, args.seed)
    where = f"{platform.machine()}, {os.cpu_count()} cores, {args.jobs} Ray CPUs"
    print(f"{where}; digits T2T-ViT, {len(configs)} trials:")
    print("  " + ", ".join(c.name for c in configs))
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeats):
        for shared in (True, False):
            times[shared].append(run(configs, shared, args))
    shared_s, per_trial_s = statistics.median(times[True]), statistics.median(times[False])
    print(
        f"median: shared {shared_s:.1f} s, per trial {per_trial_s:.1f} s, ratio {shared_s / per_trial_s:.2f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
