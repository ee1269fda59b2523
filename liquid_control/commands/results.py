"""`liquid-control results`: rewrite the tables of docs/RESULTS.md from the committed evaluation reports.

    liquid-control results [--manifest docs/results/tables.yaml] [--markdown docs/RESULTS.md] [--check]

The manifest names each table's rows and their report files (see
liquid_control/evaluation/results_tables.py); the Markdown file marks where each table goes.
--check changes nothing and exits 1 when a table in the file differs from its reports.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--manifest", type=Path, default=Path("docs/results/tables.yaml"),
                        help="tables and their evaluation reports (default docs/results/tables.yaml)")
    parser.add_argument("--markdown", type=Path, default=Path("docs/RESULTS.md"),
                        help="Markdown file with marked table places (default docs/RESULTS.md)")
    parser.add_argument("--check", action="store_true", help="only check that the tables are current (exit 1 if not)")


def run(args: argparse.Namespace) -> int:
    from liquid_control.evaluation.results_tables import ResultsError, load_manifest, render_tables, update_markdown

    try:
        tables = render_tables(load_manifest(args.manifest))
        try:
            text = args.markdown.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ResultsError(f"cannot read {args.markdown}: {err}") from err
        updated = update_markdown(text, tables)
    except ResultsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        if updated != text:
            print(f"{args.markdown}: tables differ from the reports; run `liquid-control results`", file=sys.stderr)
            return 1
        print(f"{args.markdown}: {len(tables)} tables match their reports")
        return 0
    if updated != text:
        args.markdown.write_text(updated, encoding="utf-8")
    print(f"{args.markdown}: {len(tables)} tables written from {args.manifest}")
    return 0
