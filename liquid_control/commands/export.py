"""`liquid-control export MODEL [--out DIR]`: export a model file's policy and perception to ONNX, check
each against PyTorch with onnxruntime and print the max differences.

Without --out it writes the model's ONNX cache beside it (MODEL's NAME.policy.onnx and
NAME.perception.onnx, holding the model file's SHA-256), which the perception and policy nodes load
instead of exporting at start; with --out, policy.onnx and perception.onnx in DIR."""
from __future__ import annotations

import argparse
from pathlib import Path

from liquid_control.inference.export import VERIFY_TOLERANCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model file (.safetensors) holding a policy and/or a perception model")
    parser.add_argument("--out", help="output folder (created if missing); default: the model's ONNX cache "
                        "beside it (NAME.policy.onnx, NAME.perception.onnx), which the nodes load at start")
    parser.add_argument("--tolerance", type=float, default=VERIFY_TOLERANCE,
                        help="largest |ONNX - PyTorch| accepted on random inputs (default %(default)g)")


def run(args: argparse.Namespace) -> int:
    from liquid_control.inference.export import export_caches, export_model_file

    # Errors (ExportError, ModelFileError) reach cli.main: one line on stderr, exit status 2.
    if args.out is None:
        # Only a verified export may become the cache: the tolerance is checked before writing.
        made = export_caches(args.model, tolerance=args.tolerance)
        rows = [(item.role, item.path, item.max_diff, item.write_error) for item in made]
    else:
        report = export_model_file(args.model, Path(args.out), tolerance=None)
        rows = [("policy", report.policy_path, report.policy_max_diff, ""),
                ("perception", report.perception_path, report.perception_max_diff, "")]
    failed = False
    for role, path, diff, write_error in rows:
        if write_error:
            print(f"{role:10s} {write_error}")
            failed = True
            continue
        if path is None:
            print(f"{role:10s} not in the model file, skipped")
            continue
        ok = diff <= args.tolerance
        failed |= not ok
        print(f"{role:10s} {path}  max |onnx - torch| = {diff:.2e}  "
              f"{'OK' if ok else 'FAILED'} (tolerance {args.tolerance:g})")
    return 1 if failed else 0
