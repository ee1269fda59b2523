"""`liquid-control bench NAME [ARGS...]`: run one of the benchmarks in benchmarks/.

Each benchmark is a script that prints measured figures and ratios against a baseline
measured in the same run; results are recorded in docs/BENCHMARKS.md. Arguments after
NAME go to the script (`liquid-control bench policy_latency --steps 500`).
"""
from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

from liquid_control.util.paths import share_path


def available() -> dict[str, Path]:
    folder = share_path("benchmarks")
    return {p.stem: p for p in sorted(folder.glob("*.py"))} if folder.is_dir() else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", help="benchmark to run; omit to list them")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments passed to the benchmark script")


def run(args: argparse.Namespace) -> int:
    scripts = available()
    if args.name is None:
        for name, path in scripts.items():
            summary = (path.read_text().split('"""')[1].strip().splitlines() or [""])[0]
            print(f"{name:16s} {summary}")
        return 0
    if args.name not in scripts:
        print(f"error: no benchmark named {args.name!r}; available: {', '.join(scripts) or 'none'}")
        return 2
    saved_argv = sys.argv
    sys.argv = [str(scripts[args.name]), *args.args]
    try:
        runpy.run_path(str(scripts[args.name]), run_name="__main__")
    except SystemExit as stop:  # the scripts end with sys.exit(main())
        return int(stop.code or 0) if not isinstance(stop.code, str) else 1
    finally:
        sys.argv = saved_argv
    return 0
