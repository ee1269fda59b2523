"""Fuzz every input entry point with mutated real inputs; table of handled / crashes / hangs / silent results.

    .venv/bin/python benchmarks/fuzz.py [--cases 10000] [--seed 0] [--targets model_file,bag,...]
                                        [--limit 10] [--cli-limit 30] [--onnx cfc|handmade]

The targets and what counts as a correct result are in tests/fuzz_targets.py (shared with the
property tests, tests/test_fuzz.py): mutations of a real model file, a policy ONNX export, camera
images, a rosbag2 MCAP bag, a scenario, a training recipe, PolicyRuntime.step inputs and
`liquid-control` argument lists. Cases are spread evenly over the targets. A case that takes longer
than --limit seconds (--cli-limit for CLI cases, which import and run whole commands) counts as a
hang; one is stopped after 60 s. Exit status 1 if any case crashed, hung or gave a silent result.
"""
from __future__ import annotations

import argparse
import collections
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fuzz_targets as ft  # noqa: E402

KINDS = ("ok", "handled", "crash", "hang", "silent")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000, help="total cases over all targets (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default=",".join(ft.TARGETS), help="comma-separated subset of targets")
    parser.add_argument("--limit", type=float, default=10.0, help="seconds after which a case is a hang")
    parser.add_argument("--cli-limit", type=float, default=30.0, help="the same for CLI cases")
    parser.add_argument("--onnx", choices=("cfc", "handmade"), default="cfc",
                        help="policy ONNX to mutate: the real CfC export (default) or a small handmade graph")
    args = parser.parse_args()
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in ft.TARGETS]
    if unknown or args.cases < len(targets):
        parser.error(f"unknown targets {unknown}" if unknown else "--cases must be >= the number of targets")
    warnings.simplefilter("ignore")  # numpy overflow notices from absurd inputs are expected

    started = time.perf_counter()
    ctx = ft.build_context(Path(tempfile.mkdtemp(prefix="liquid_fuzz_")), onnx_policy=args.onnx,
                           perception_onnx=args.onnx == "cfc")
    print(f"context built in {time.perf_counter() - started:.0f} s ({ctx.root})", file=sys.stderr)
    counts = {t: collections.Counter() for t in targets}
    seconds = collections.Counter()
    worst = {t: 0.0 for t in targets}
    examples: dict[str, list[str]] = collections.defaultdict(list)
    per_target = [args.cases // len(targets) + (i < args.cases % len(targets)) for i in range(len(targets))]
    for target, n in zip(targets, per_target):
        limit = args.cli_limit if target == "cli" else args.limit
        for i in range(n):
            rng = random.Random(f"{args.seed}-{target}-{i}")
            outcome, elapsed = ft.run_case(ft.TARGETS[target], ctx, rng, limit, hard_limit_s=60.0)
            counts[target][outcome.kind] += 1
            seconds[target] += elapsed
            worst[target] = max(worst[target], elapsed)
            if outcome.kind in ("crash", "hang", "silent") and len(examples[target]) < 5:
                examples[target].append(f"case {i}: {outcome.kind}: {outcome.detail}")
        print(f"{target}: {n} cases in {seconds[target]:.0f} s", file=sys.stderr)

    header = f"| {'target':10s} | cases | handled (error) | handled (correct result) | crashes | hangs | silent | worst case (s) |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    total = collections.Counter()
    for target in targets:
        c = counts[target]
        total.update(c)
        print(f"| {target:10s} | {sum(c.values()):5d} | {c['handled']:15d} | {c['ok']:24d} | {c['crash']:7d} | "
              f"{c['hang']:5d} | {c['silent']:6d} | {worst[target]:14.2f} |")
    print(f"| {'all':10s} | {sum(total.values()):5d} | {total['handled']:15d} | {total['ok']:24d} | "
          f"{total['crash']:7d} | {total['hang']:5d} | {total['silent']:6d} | {max(worst.values()):14.2f} |")
    print(f"\n{sum(total.values())} cases in {time.perf_counter() - started:.0f} s wall")
    for target, lines in examples.items():
        for line in lines:
            print(f"{target}: {line}")
    return 1 if total["crash"] or total["hang"] or total["silent"] else 0


if __name__ == "__main__":
    sys.exit(main())
