"""`liquid-control` command line: one entry point, one subcommand per user task.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their subcommand runs, so
`liquid-control info` does not pay for importing PyBullet or rclpy.

Bad input (a project error, ValueError or OSError raised by a subcommand) is turned into one line,
``error: <message>`` on stderr, and exit status 2 here, in one place; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help). Keep sorted by the order users meet them.
# The help texts are plain text ("95% interval"): `argparse_text` escapes them for argparse.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "info": ("liquid_control.commands.info", "versions, and parameter counts of a model file"),
    "export": ("liquid_control.commands.export", "write policy.onnx and perception.onnx from a model file and verify them"),
    "demo": ("liquid_control.commands.demo", "closed-loop flight demo: sim + perception + policy nodes over ROS 2, shipped policy, MCAP bag"),
    "expert": ("liquid_control.commands.expert", "fly the privileged expert on a scenario suite; success table, strip, video, plot"),
    "record": ("liquid_control.commands.record", "record topics into a rosbag2 MCAP bag, or repair a killed one"),
    "replay": ("liquid_control.commands.replay", "publish a bag's topics live with their original timing"),
    "evaluate-bag": ("liquid_control.commands.evaluate_bag", "run perception + policy over a bag, compare commands"),
    "collect": ("liquid_control.commands.collect", "fly the expert (with perturbations) on a suite and store training shards"),
    "train": ("liquid_control.commands.train", "train perception + policy by imitation from a YAML recipe"),
    "evaluate": ("liquid_control.commands.evaluate", "fly a model closed-loop on a suite; success with 95% interval"),
    "sweep": ("liquid_control.commands.sweep", "train and evaluate models x recipes x seeds as Ray tasks; one comparison table"),
    "explain": ("liquid_control.commands.explain", "saliency overlays (VisualBackProp, integrated gradients) and CfC neuron traces of a model"),
    "results": ("liquid_control.commands.results", "rewrite the tables of docs/RESULTS.md from the committed evaluation reports"),
    "doctor": ("liquid_control.commands.doctor", "pre-flight check: ROS, camera vs model, inference time, flight-controller link, failsafe settings"),
    "bench": ("liquid_control.commands.bench", "run a benchmark from benchmarks/ (omit the name to list them)"),
}


def argparse_text(text: str) -> str:
    """Plain text as argparse help: argparse %-formats help strings (for %(default)s), so a bare % must be %%."""
    return text.replace("%", "%%")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liquid-control", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help_text) in SUBCOMMANDS.items():
        # Arguments are added lazily (see main) so that --help of one command
        # never imports another command's heavy dependencies.
        sub.add_parser(name, help=argparse_text(help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # First pass: find the subcommand, then let its module add its own arguments.
    if argv and argv[0] in SUBCOMMANDS:
        module = importlib.import_module(SUBCOMMANDS[argv[0]][0])
        sp = argparse.ArgumentParser(prog=f"liquid-control {argv[0]}", description=SUBCOMMANDS[argv[0]][1])
        module.add_arguments(sp)
        args = sp.parse_args(argv[1:])
        try:
            return int(module.run(args) or 0)
        except Exception as error:
            if not is_input_error(error):
                raise  # a bug: keep the traceback
            print(f"error: {one_line(error)}", file=sys.stderr)
            return 2
    parser.parse_args(argv)  # prints usage / error for unknown or missing commands
    return 2


# Project errors that are not ValueErrors, by module: looked up only in modules already imported
# (an error of a class never imported cannot have been raised), so `info` still imports no torch.
# Their torch-free homes (models.model_file and inference.export re-export the same classes), so an
# error raised on the deploy path, which never imports those two, is recognised too.
_OTHER_INPUT_ERRORS = (("liquid_control.models.errors", "ModelFileError"),
                       ("liquid_control.inference.onnx_file", "ExportError"))


def is_input_error(error: BaseException) -> bool:
    """Bad input rather than a bug: the project's errors (ModelFileError, ExportError, and the ValueErrors
    BagError, ScenarioError, ConfigError, DatasetError...), ValueError, and OSError (unreadable or
    unwritable paths)."""
    if isinstance(error, (ValueError, OSError)):
        return True
    for module_name, class_name in _OTHER_INPUT_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(error, getattr(module, class_name)):
            return True
    return False


def one_line(error: BaseException, limit: int = 1000) -> str:
    """The error's message on one line, at most `limit` characters (it may quote a huge input)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
