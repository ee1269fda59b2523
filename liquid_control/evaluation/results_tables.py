"""RESULTS.md tables rendered from committed evaluation reports (`liquid-control results`).

A manifest (docs/results/tables.yaml) names each table and its rows; a row is a label and its training
runs, a run being one or more `evaluate --json` reports (merged by suite). A label with several runs
is one model trained with several seeds: its cells read "mean% (min-max, k seeds)"
(`comparison_markdown`). A row may set `first: K` to count only each scenario's first K episodes
(seeds), so a 100-episode report compares on the same episodes as a shorter one. In the Markdown file each table sits between two marker lines:

    <!-- results-table: NAME -->
    ...rendered table...
    <!-- /results-table -->

so the text around the tables is prose that people write, and the numbers are only ever the files'.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from liquid_control.util.safe_input import InputError, load_yaml_file, loads_json, read_text_file

BEGIN = "<!-- results-table: {name} -->"
REPORT_MAX_BYTES = 64 << 20  # a 900-episode evaluation report is ~0.6 MB
END = "<!-- /results-table -->"
_BLOCK = re.compile(r"<!-- results-table: (?P<name>[\w.-]+) -->\n(?P<body>.*?)<!-- /results-table -->", re.S)


def comparison_data(models: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The numbers of `comparison_markdown`: {"columns": [suite...], "rows": [{"label", "runs", "cells":
    {suite: {"runs", "rate" | "mean"/"min"/"max" (percent), "success" (a single run's Wilson interval)}}}]}.

    `models`: (label, evaluation reports as written by `evaluate --json`), one entry per training run;
    a run's reports are merged by suite (a suite twice in one run is an error: which counts?)."""
    columns: list[str] = []
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {}
    for label, reports in models:
        merged: dict[str, dict[str, Any]] = {}
        for report in reports:
            for suite, entry in report["suites"].items():
                if suite in merged:
                    raise ValueError(f"compare: suite {suite!r} appears twice in one run of {label!r}")
                merged[suite] = entry["total"]
                if suite not in columns:
                    columns.append(suite)
        runs.setdefault(label, []).append(merged)
    columns.sort(key=lambda name: (name != "train", name))  # train first, then the others alphabetically
    rows = []
    for label, label_runs in runs.items():
        cells: dict[str, Any] = {}
        for suite in columns:
            totals = [run[suite]["success"] for run in label_runs if suite in run]
            if not totals:
                continue
            rates = [100 * s["rate"] for s in totals]
            cells[suite] = {"runs": len(totals), "rates": rates, "mean": float(np.mean(rates)),
                            "min": min(rates), "max": max(rates),
                            "success": totals[0] if len(label_runs) == 1 else None}
        rows.append({"label": label, "runs": len(label_runs), "cells": cells})
    return {"columns": columns, "rows": rows}


def comparison_markdown(models: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """One row per model, one column per suite: success over the suite's episodes.

    `models` as for `comparison_data`. A label given once gives "rate [95% Wilson] (n=episodes)"; a label
    given for several runs (training seeds) gives "mean% (min-max, k seeds)" over the runs that report the
    suite, so a difference between two models is real only where their seed ranges do not overlap."""
    data = comparison_data(models)
    columns = data["columns"]
    lines = ["| model | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for row in data["rows"]:
        texts = []
        for suite in columns:
            cell = row["cells"].get(suite)
            if cell is None:
                texts.append("—")
            elif row["runs"] == 1:
                s = cell["success"]
                texts.append(f"{100 * s['rate']:.0f}% [{100 * s['low']:.0f}, {100 * s['high']:.0f}] "
                             f"(n={s['trials']})")
            else:
                texts.append(f"{cell['mean']:.0f}% ({cell['min']:.0f}-{cell['max']:.0f}, {cell['runs']} seeds)")
        lines.append(f"| {row['label']} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n"


class ResultsError(ValueError):
    """A manifest, report or Markdown file that cannot be rendered; the message names the problem."""


Row = tuple[str, list[list[Path]], "int | None"]  # label, runs (report paths), first K episodes per scenario


def load_manifest(path: str | Path) -> dict[str, list[Row]]:
    """Table name -> [(label, runs, first)], each run a list of report paths (relative to the manifest)."""
    path = Path(path)
    try:
        data = load_yaml_file(path)
    except InputError as err:
        raise ResultsError(f"cannot read results manifest {path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("tables"), dict):
        raise ResultsError(f"{path}: expected a mapping with a 'tables' mapping")
    tables: dict[str, list[Row]] = {}
    for name, rows in data["tables"].items():
        if not isinstance(name, str) or not re.fullmatch(r"[\w.-]+", name):
            raise ResultsError(f"{path}: table name {name!r} must be letters, digits, '_', '.' or '-'")
        if not isinstance(rows, list) or not rows:
            raise ResultsError(f"{path}: table {name!r} needs a non-empty list of rows")
        parsed = []
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("label"), str) or "runs" not in row:
                raise ResultsError(f"{path}: table {name!r}: each row needs 'label' (text) and 'runs'")
            runs = row["runs"]
            if not isinstance(runs, list) or not runs:
                raise ResultsError(f"{path}: table {name!r}, row {row['label']!r}: 'runs' must be a non-empty list")
            paths = []
            for run in runs:
                files = [run] if isinstance(run, str) else run
                if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
                    raise ResultsError(f"{path}: table {name!r}, row {row['label']!r}: a run is a report file "
                                       "or a list of report files")
                paths.append([path.parent / f for f in files])
            first = row.get("first")
            if first is not None and (not isinstance(first, int) or isinstance(first, bool) or first < 1):
                raise ResultsError(f"{path}: table {name!r}, row {row['label']!r}: 'first' must be a positive integer")
            parsed.append((row["label"], paths, first))
        tables[name] = parsed
    return tables


def _read_report(path: Path) -> dict[str, Any]:
    try:
        report = loads_json(read_text_file(path, max_bytes=REPORT_MAX_BYTES))
    except InputError as err:
        raise ResultsError(f"cannot read evaluation report {path}: {err}") from err
    if not isinstance(report, dict) or not isinstance(report.get("suites"), dict):
        raise ResultsError(f"{path}: not an evaluation report (no 'suites' mapping)")
    return report


def first_episodes(report: dict[str, Any], count: int) -> dict[str, Any]:
    """The report's suite totals recounted over each scenario's `count` lowest-seed episodes."""
    from liquid_control.evaluation.stats import proportion

    episodes = report.get("episodes")
    if not isinstance(episodes, list):
        raise ResultsError(f"report of {report.get('model')!r} has no per-episode records to take the first "
                           f"{count} from")
    by_scenario: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for episode in episodes:
        by_scenario.setdefault((episode["suite"], episode["scenario"]), []).append(episode)
    kept: dict[str, list[bool]] = {}
    for (suite, _), group in by_scenario.items():
        group.sort(key=lambda e: e["seed"])
        kept.setdefault(suite, []).extend(bool(e["success"]) for e in group[:count])
    suites = {}
    for suite, outcomes in kept.items():
        suites[suite] = {"total": {"success": dataclasses.asdict(proportion(outcomes))}}
    return {"model": report.get("model"), "suites": suites}


def render_tables(manifest: dict[str, list[Row]]) -> dict[str, str]:
    """Table name -> Markdown table."""
    rendered = {}
    for name, rows in manifest.items():
        models = []
        for label, runs, first in rows:
            for files in runs:  # one comparison entry per run: repeated labels are seeds
                reports = [_read_report(f) for f in files]
                if first is not None:
                    try:
                        reports = [first_episodes(r, first) for r in reports]
                    except (KeyError, TypeError) as err:
                        raise ResultsError(f"table {name!r}, row {label!r}: malformed episode record ({err})") from err
                models.append((label, reports))
        try:
            rendered[name] = comparison_markdown(models)
        except (KeyError, TypeError, ValueError) as err:
            raise ResultsError(f"table {name!r}: {err}") from err
    return rendered


def update_markdown(text: str, tables: dict[str, str]) -> str:
    """`text` with every marked table replaced; every table must have exactly one marked place."""
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    for name in tables:
        if found.count(name) != 1:
            raise ResultsError(f"table {name!r} needs exactly one marked place in the Markdown file "
                               f"({BEGIN.format(name=name)} ... {END}), found {found.count(name)}")
    unknown = sorted(set(found) - set(tables))
    if unknown:
        raise ResultsError(f"the Markdown file marks tables the manifest does not define: {unknown}")
    return _BLOCK.sub(lambda m: f"{BEGIN.format(name=m.group('name'))}\n{tables[m.group('name')]}{END}", text)
