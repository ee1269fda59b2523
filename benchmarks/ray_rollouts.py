"""Per-episode cost of `collect` and `evaluate` on Ray (1 and 2 CPUs) against the local process pool.

    .venv/bin/python benchmarks/ray_rollouts.py [--episodes 8] [--duration 3] [--rounds 2] [--backend torch]

Each configuration flies the same episodes (train_fly_to_target, seeds 0..N-1 for collect, evaluation seeds
from 1,000,000): the process pool with 1 and 2 workers (the baseline, measured in the same run), then a local
Ray of 1 and of 2 CPUs (tasks of 1 CPU each, as `--ray` starts it). Reported: wall seconds per episode
(wall / episodes, the best of --rounds rounds, as the machine may be shared; for Ray after warm-up episodes, so that starting its worker processes is not counted;
the process pool's figure includes its start), the Ray start-up separately, and the ratio to the process
pool with the same number of CPUs; also the collect shards' size and the driver's time to write one (the
part of an episode that stays on the driver on a cluster). The figures feed the scaling
projection in docs/SCALE.md; the machine's load at the time is printed (the numbers depend on it).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from liquid_control.evaluation.closed_loop import evaluate_suites  # noqa: E402
from liquid_control.learning.collect import CollectConfig, collect  # noqa: E402
from liquid_control.util.executors import start_local_ray  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0, help="episode length (s of simulated flight)")
    parser.add_argument("--rounds", type=int, default=2, help="repeat everything; the least disturbed round counts")
    parser.add_argument("--backend", default="torch", help="evaluate's runtime (torch: no ONNX export per run)")
    parser.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "models" /
                                               "default_cfc.safetensors"))
    args = parser.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="ray_rollouts_"))
    suite = work / "bench_suite.yaml"
    suite.write_text(f"scenarios:\n  - {{scenario: train_fly_to_target, episodes: {args.episodes}}}\n")
    config = CollectConfig(duration_s=args.duration)
    print(f"{args.episodes} episodes of {args.duration:g} s; load average before: {os.getloadavg()}; "
          f"{os.cpu_count()} CPUs")

    def run_collect(name: str, workers: int, ray_address=False) -> float:
        start = time.perf_counter()
        summary = collect(str(suite), work / name, workers=workers, config=config, progress=False,
                          ray_address=ray_address)
        assert summary.written == args.episodes
        return (time.perf_counter() - start) / args.episodes

    def run_evaluate(workers: int, ray_address=False) -> float:
        start = time.perf_counter()
        report = evaluate_suites(args.model, [str(suite)], workers=workers, duration_s=args.duration,
                                 backend=args.backend, progress=False, ray_address=ray_address)
        assert len(report.episodes) == args.episodes
        return (time.perf_counter() - start) / args.episodes

    rows: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        rows.setdefault(name, []).append(value)
        print(f"  {name}: {value:.2f} s per episode (load average {os.getloadavg()[0]:.1f})", flush=True)

    ray_start: dict[int, list[float]] = {}
    for round_index in range(args.rounds):
        for workers in (1, 2):
            record(f"collect, process pool, {workers} worker(s)", run_collect(f"pool{workers}_{round_index}", workers))
            record(f"evaluate, process pool, {workers} worker(s)", run_evaluate(workers))
        for cpus in (1, 2):  # a fresh local Ray of that many CPUs, as `--ray` with --workers 1 or 2 starts
            start = time.perf_counter()
            for attempt in (1, 2):  # Ray waits a fixed 30 s for its raylet: too short on a saturated machine
                try:
                    start_local_ray(ray, cpus, log_to_driver=False)
                    break
                except Exception as err:
                    if attempt == 2 or "timed out during startup" not in str(err):
                        raise
                    ray.shutdown()
            ray_start.setdefault(cpus, []).append(time.perf_counter() - start)
            warm = work / f"warm{cpus}_{round_index}"  # start Ray's worker processes (torch, pybullet imports)
            collect(str(suite), warm, episodes=2 * cpus, workers=cpus, config=CollectConfig(duration_s=0.3),
                    progress=False, ray_address=None)
            record(f"collect, Ray, {cpus} CPU(s)", run_collect(f"ray{cpus}_{round_index}", cpus, None))
            record(f"evaluate, Ray, {cpus} CPU(s)", run_evaluate(cpus, None))
            ray.shutdown()
    print(f"load average after: {os.getloadavg()}; local Ray start-up (ray.init): "
          + ", ".join(f"{c} CPU(s) {min(t):.1f} s" for c, t in ray_start.items()))
    best = {name: min(values) for name, values in rows.items()}
    size_mb, write_ms = driver_write_cost(work / "ray2_0")
    print(f"collect shards: {size_mb:.2f} MB each; the driver writes one in {write_ms:.1f} ms (fsync included)")
    print(f"| configuration | s per episode (best of {args.rounds}) | all rounds | vs process pool, same CPUs |")
    print("|---|---:|---|---:|")
    for name, value in best.items():
        what, kind, cpus = name.split(", ")
        base = best[f"{what}, process pool, {cpus.split()[0]} worker(s)"]
        ratio = "1 (baseline)" if kind == "process pool" else f"{value / base:.2f}x"
        print(f"| {name} | {value:.2f} | {', '.join(f'{v:.2f}' for v in rows[name])} | {ratio} |")


def driver_write_cost(folder: Path) -> tuple[float, float]:
    """Mean shard size (MB) and the driver's time to write one (ms): the per-episode work that stays on the
    driver when collect runs on a cluster (the workers compress, the driver writes)."""
    from liquid_control.learning.dataset import list_shards, write_shard_bytes

    blobs = [p.read_bytes() for p in list_shards(folder)]
    out = Path(tempfile.mkdtemp(prefix="ray_rollouts_write_"))
    start = time.perf_counter()
    for k, blob in enumerate(blobs):
        write_shard_bytes(out / f"copy_{k:06d}.npz", blob)
    elapsed = time.perf_counter() - start
    return sum(map(len, blobs)) / len(blobs) / 1e6, 1e3 * elapsed / len(blobs)


if __name__ == "__main__":
    main()
