"""`liquid-control export MODEL --out DIR`: write policy.onnx and perception.onnx from a model
file, check each against PyTorch with onnxruntime and print the max differences."""
from __future__ import annotations

import argparse
from pathlib import Path

from liquid_control.inference.export import VERIFY_TOLERANCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.safetensors) holding a policy and/or a perception model")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--tolerance", type=float, default=VERIFY_TOLERANCE,
                        help="largest |ONNX - PyTorch| accepted on random inputs (default %(default)g)")


def run(args: argparse.Namespace) -> int:
    from liquid_control.inference.export import export_model_file

    # Errors (ExportError, ModelFileError) reach cli.main: one line on stderr, exit status 2.
    report = export_model_file(args.model, Path(args.out), tolerance=None)
    failed = False
    for role, path, diff in (("policy", report.policy_path, report.policy_max_diff),
                             ("perception", report.perception_path, report.perception_max_diff)):
        if path is None:
            print(f"{role:10s} not in the model file, skipped")
            continue
        ok = diff <= args.tolerance
        failed |= not ok
        print(f"{role:10s} {path}  max |onnx - torch| = {diff:.2e}  "
              f"{'OK' if ok else 'FAILED'} (tolerance {args.tolerance:g})")
    return 1 if failed else 0
