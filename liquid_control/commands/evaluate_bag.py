"""`liquid-control evaluate-bag BAG [--model MODEL]`: replay a bag offline through perception + policy
and compare the policy's commands with the recorded ones (JSON report + plot).

    liquid-control evaluate-bag BAG [--model model.safetensors] [-o OUT] [--image-topic T] [--command-topic T] [--strict]
    liquid-control evaluate-bag BAG --perception perception.onnx --policy policy.onnx
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", help="bag directory or .mcap/.db3 file")
    parser.add_argument("--model", help="model file (.safetensors) holding both perception and policy (default: the "
                                         "shipped models/default_cfc.safetensors)")
    parser.add_argument("--perception", help="perception model (.onnx or .safetensors); overrides --model's")
    parser.add_argument("--policy", help="policy model (.onnx or .safetensors); overrides --model's")
    parser.add_argument("-o", "--output", help="output directory (default: <bag>_evaluation)")
    parser.add_argument("--image-topic", help="image topic (default: auto-detected)")
    parser.add_argument("--command-topic", help="recorded command topic (default: auto-detected)")
    parser.add_argument("--backend", default="auto", choices=("auto", "onnxruntime", "torch"))
    parser.add_argument("--max-match-gap", type=float, default=0.1,
                        help="largest image/command stamp gap (s) for a pair to count (default 0.1)")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a truncated or damaged bag instead of evaluating the part before the cut (with a warning)")


def run(args: argparse.Namespace) -> int:
    from liquid_control.evaluation.bag import EvaluationConfig, evaluate_bag, write_outputs
    from liquid_control.inference.model_source import default_model_path
    from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime

    model = args.model or str(default_model_path())
    perception_source, policy_source = args.perception or model, args.policy or model
    # Errors (BagError, ModelFileError, ExportError, ValueError, OSError) reach cli.main: one line, exit 2.
    config = EvaluationConfig(args.image_topic, args.command_topic, max_match_gap_s=args.max_match_gap,
                              strict=args.strict)
    # The policy first: an unusable policy file is refused before the perception is (maybe) exported.
    policy = PolicyRuntime(policy_source, backend=args.backend)
    perception = PerceptionRuntime(perception_source, backend=args.backend)
    evaluation = evaluate_bag(args.bag, perception, policy, config)
    out_dir = Path(args.output) if args.output else Path(str(Path(args.bag)).rstrip("/") + "_evaluation")
    report_path, plot_path = write_outputs(evaluation, out_dir)
    report = evaluation.report()
    if evaluation.repaired:
        span = report["time_range"]
        how = ("truncated (its writer stopped before finishing the file)" if evaluation.repair_reason == "truncated"
               else evaluation.repair_reason)
        print(f"warning: bag {args.bag} is {how}; evaluated "
              f"only the {report['frames']} frames before the cut/damage ({evaluation.repaired_message_count} messages "
              f"recovered, image stamps {span['first_image_stamp_ns'] / 1e9:.3f}-"
              f"{span['last_image_stamp_ns'] / 1e9:.3f} s); report.json records repaired=true. "
              "Use --strict to refuse such bags.", file=sys.stderr)
    print(f"{report['frames']} frames ({report['matched_frames']} matched to recorded commands) in "
          f"{report['processing_s']:.2f} s ({report['processing_fps']:.0f} frames/s)")
    for axis, values in report["metrics"].items():
        correlation = "n/a" if values["correlation"] is None else f"{values['correlation']:.3f}"
        sign = "n/a" if values["sign_agreement"] is None else f"{values['sign_agreement']:.2f}"
        print(f"  {axis:9s} MAE {values['mae']:.4f}  RMSE {values['rmse']:.4f} {values['unit']:5s} "
              f"corr {correlation}  sign agreement {sign}")
    print(f"report: {report_path}\nplot:   {plot_path}")
    return 0
