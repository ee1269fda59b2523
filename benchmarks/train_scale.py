"""Training throughput (frames/s): 1 process against 2 DDP processes under torchrun (gloo), and 1 GPU.

    .venv/bin/python benchmarks/train_scale.py [--config config/train_cfc.yaml] [--steps 20] [--threads 1]
                                               [--batch-size N] [--cuda] [--no-ddp]

Each variant runs what `train` runs per step: the recipe's sampler with its augmentation in the prefetch
thread, `train.TrainStep` (perception, policy, loss; under DDP wrapped in DistributedDataParallel, so the
gradients are averaged across ranks in the backward pass), a clipped AdamW step, on synthetic episodes of
the recipe's image size (benchmarks/train_step.py). Throughput = frames trained per second over all ranks
(batch_size per rank x sequence_length x ranks / step time), after 3 warm-up steps. The baseline, measured in
the same run, is 1 process on the CPU with `--threads` torch threads. The 2-process variant is started with
torchrun itself (`python -m torch.distributed.run --nproc_per_node=2 ...`), the way users run `train`, with
`--threads` torch threads per process. `--cuda` adds 1 process on the GPU (optim.device cuda).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))  # train_step's synthetic episodes, also when run by `liquid-control bench`

from liquid_control.learning import distributed  # noqa: E402
from liquid_control.learning.recipe import load_config  # noqa: E402
from liquid_control.learning.sampler import prefetched  # noqa: E402
from liquid_control.learning.train import TrainStep, aux_heads, build_models, recipe_sampler  # noqa: E402
from train_step import synthetic_episodes  # noqa: E402

WARMUP = 3


def measure(config_path: str, steps: int, threads: int, device_name: str, batch_size: int | None = None
            ) -> dict[str, float]:
    """Seconds per step and frames/s over all ranks; joins torchrun's process group when started by it."""
    config = load_config(config_path, {"optim.batch_size": batch_size} if batch_size else None)
    torch.set_num_threads(threads)
    found = distributed.environment()
    device = distributed.training_device(device_name, found[2] if found else 0, found[1] if found else 1)
    dist = distributed.setup(found, "auto", device, 10.0)
    on = None if device.type == "cpu" else device
    try:
        torch.manual_seed(0)
        perception, policy = build_models(config)
        perception.to(device)
        policy.to(device)
        o = config.optim
        pc = perception.config
        episodes = synthetic_episodes(8, 400, pc.height, pc.width)
        sampler = recipe_sampler(config, episodes, np.random.default_rng([0, dist.rank]))
        head = aux_heads(config, perception, policy)
        if head is not None:
            head.to(device)
        module: torch.nn.Module = TrainStep(perception, policy, head)
        if dist.active:
            import warnings

            from torch.nn.parallel import DistributedDataParallel

            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            module = DistributedDataParallel(module, broadcast_buffers=False,  # as train does
                                             device_ids=[device] if device.type == "cuda" else None)
        parameters = [p for p in module.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=1e-3)
        state = policy.initial_state(o.batch_size, on)
        start = 0.0
        for k, batch in enumerate(prefetched(sampler.next_batch, steps + WARMUP)):
            if k == WARMUP:
                if on is not None:
                    torch.cuda.synchronize(device)
                dist.barrier()
                start = time.perf_counter()
            loss, state = module(batch, state, policy.command_scale, on)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, o.grad_clip)
            optimizer.step()
        if on is not None:
            torch.cuda.synchronize(device)
        dist.barrier()
        seconds = (time.perf_counter() - start) / steps
        frames = o.batch_size * o.sequence_length * dist.world_size
        return {"s_per_step": seconds, "frames_per_s": frames / seconds, "ranks": dist.world_size,
                "frames_per_step": frames}
    finally:
        dist.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_variant(args: argparse.Namespace, processes: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={processes}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(Path(__file__).resolve()),
               "--worker", "--config", args.config, "--steps", str(args.steps), "--threads", str(args.threads),
               *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"torchrun variant failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[0][len("RESULT "):])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/train_cfc.yaml", help="training recipe (default: the shipped one)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--batch-size", type=int, help="streams per process (default: the recipe's optim.batch_size)")
    parser.add_argument("--cuda", action="store_true", help="also 1 process on the GPU")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 2-process torchrun variant")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # a torchrun rank
    args = parser.parse_args()
    if args.worker:
        result = measure(args.config, args.steps, args.threads, "cpu", args.batch_size)
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps(result), flush=True)
        return 0
    config = load_config(args.config, {"optim.batch_size": args.batch_size} if args.batch_size else None)
    print(f"recipe {args.config}: batch {config.optim.batch_size} x {config.optim.sequence_length} frames per rank, "
          f"{args.steps} timed steps per variant, {args.threads} torch thread(s) per process, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}")
    variants = [("1 process, CPU (baseline)", lambda: measure(args.config, args.steps, args.threads, "cpu",
                                                              args.batch_size))]
    if not args.no_ddp:
        variants.append(("2 processes, torchrun + gloo DDP", lambda: torchrun_variant(args, 2)))
    if args.cuda and not torch.cuda.is_available():
        print(f"1 process, GPU: not measured (torch {torch.__version__} sees no CUDA device here)")
    elif args.cuda:
        variants.append((f"1 process, GPU ({torch.cuda.get_device_name(0)})",
                         lambda: measure(args.config, args.steps, args.threads, "cuda", args.batch_size)))
    print(f"{'variant':<44} {'ms/step':>8} {'frames/step':>12} {'frames/s':>9} {'us/frame':>9} {'vs baseline':>12}")
    baseline = None
    for name, run in variants:
        r = run()
        baseline = baseline or r["frames_per_s"]
        print(f"{name:<44} {1e3 * r['s_per_step']:8.0f} {r['frames_per_step']:12.0f} {r['frames_per_s']:9.0f} "
              f"{1e6 / r['frames_per_s']:9.0f} {r['frames_per_s'] / baseline:11.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
