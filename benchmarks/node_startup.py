"""Node start-up: seconds from process start until the node is built, and resident memory (RSS) per node.

Each node runs as its own process (`python -m liquid_control.nodes.<node>`, as `ros2 run` starts it),
once per round. Start-up ends at the node's own start-up log line (the last thing its constructor does,
after the model has loaded); RSS is read from /proc/<pid>/status (VmRSS) after the node has spun for
`--settle` seconds, with VmHWM (peak RSS) beside it. Targets (issue 14): <= 2 s and <= 150 MB.

Rows:
- perception, policy: the shipped model on onnxruntime from its verified ONNX cache (the deploy path);
- perception, policy (no cache): the same model copied without its cache, so the node exports and
  verifies at start, as every start did before the cache (torch loaded) — the baseline;
- sim, mavlink_bridge: the other nodes of a flight, for scale.

Usage: python benchmarks/node_startup.py [--rounds 3] [--settle 2]   (run it niced on a shared host)
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from liquid_control.inference.model_source import default_model_path  # noqa: E402

# (row label, node module, start-up log text, parameters)
def cases(uncached_model: Path) -> list[tuple[str, str, str, list[str]]]:
    return [
        ("perception", "perception_node", "] [perception]: perception:", []),
        ("policy", "policy_node", "] [policy]: policy:", []),
        ("perception (no cache)", "perception_node", "] [perception]: perception:", [f"model_path:={uncached_model}"]),
        ("policy (no cache)", "policy_node", "] [policy]: policy:", [f"model_path:={uncached_model}"]),
        ("sim", "sim_node", "] [sim]: sim:", []),
        ("mavlink_bridge", "mavlink_bridge_node", "] [mavlink_bridge]: MAVLink bridge on",
         ["connection:=udpin:127.0.0.1:14599"]),
    ]


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) in kB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def run_once(module: str, ready_text: str, parameters: list[str], settle_s: float,
             timeout_s: float) -> tuple[float, int, int]:
    """(start-up seconds, RSS kB, peak RSS kB) of one start of `module`."""
    args = [sys.executable, "-m", f"liquid_control.nodes.{module}", "--ros-args"]
    for parameter in parameters:
        args += ["-p", parameter]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        log = []
        while True:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError(f"{module} exited with {proc.returncode} before starting:\n{''.join(log)}")
            log.append(line)
            if ready_text in line:
                startup = time.perf_counter() - started
                break
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError(f"{module} did not start within {timeout_s} s:\n{''.join(log)}")
        time.sleep(settle_s)
        rss, peak = memory_kb(proc.pid)
        return startup, rss, peak
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="starts per node (median and max reported)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds of spinning before RSS is read")
    parser.add_argument("--timeout", type=float, default=180.0, help="longest wait for one start (s)")
    parser.add_argument("--only", nargs="*", help="row labels to run (default: all)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        uncached = Path(shutil.copy(default_model_path(), Path(scratch) / "uncached.safetensors"))
        print(f"load average {os.getloadavg()[0]:.1f}; {args.rounds} starts per node, RSS after {args.settle:g} s\n")
        print("| node | start-up median (max) | RSS median (max) | peak RSS (VmHWM, max) |")
        print("|---|---|---|---|")
        for label, module, ready_text, parameters in cases(uncached):
            if args.only and label not in args.only:
                continue
            results = []
            for _ in range(args.rounds):
                for cache in Path(scratch).glob("uncached.*.onnx"):  # each start must export again
                    cache.unlink()
                results.append(run_once(module, ready_text, parameters, args.settle, args.timeout))
            seconds = [r[0] for r in results]
            rss = [r[1] / 1024 for r in results]
            peak = [r[2] / 1024 for r in results]
            print(f"| {label} | {statistics.median(seconds):.2f} s ({max(seconds):.2f}) | "
                  f"{statistics.median(rss):.0f} MB ({max(rss):.0f}) | {max(peak):.0f} MB |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
