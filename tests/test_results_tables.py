"""`liquid-control results`: RESULTS.md tables rendered from committed evaluation reports."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from liquid_control.cli import main


def _report(path: Path, rates: dict[str, float], trials: int = 100) -> str:
    suites = {suite: {"total": {"success": {"rate": rate, "low": max(0.0, rate - 0.1), "high": min(1.0, rate + 0.1),
                                            "trials": trials}}}
              for suite, rate in rates.items()}
    path.write_text(json.dumps({"model": "m", "suites": suites}))
    return path.name


@pytest.fixture
def results_dir(tmp_path):
    _report(tmp_path / "a_s0.json", {"train": 0.8, "ood_x": 0.4})
    _report(tmp_path / "a_s1.json", {"train": 0.9, "ood_x": 0.6})
    _report(tmp_path / "a_s1_time.json", {"occlusion": 0.7})
    _report(tmp_path / "b.json", {"train": 0.5, "ood_x": 0.2})
    (tmp_path / "tables.yaml").write_text(
        "tables:\n"
        "  main:\n"
        "    - {label: A, runs: [a_s0.json, [a_s1.json, a_s1_time.json]]}\n"
        "    - {label: B, runs: [b.json]}\n")
    (tmp_path / "RESULTS.md").write_text("# Results\n\nprose before\n\n<!-- results-table: main -->\nold table\n"
                                         "<!-- /results-table -->\n\nprose after\n")
    return tmp_path


def _run(folder: Path, *extra: str) -> int:
    return main(["results", "--manifest", str(folder / "tables.yaml"), "--markdown", str(folder / "RESULTS.md"),
                 *extra])


def test_tables_are_rendered_between_markers_and_seeds_are_aggregated(results_dir, capsys):
    assert _run(results_dir, "--check") == 1  # "old table" is stale
    assert _run(results_dir) == 0
    text = (results_dir / "RESULTS.md").read_text()
    assert text.startswith("# Results\n\nprose before\n") and text.endswith("prose after\n")
    assert "old table" not in text
    row_a = next(line for line in text.splitlines() if line.startswith("| A |"))
    row_b = next(line for line in text.splitlines() if line.startswith("| B |"))
    assert "85% (80-90, 2 seeds)" in row_a and "50% (40-60, 2 seeds)" in row_a
    assert "70% (70-70, 1 seeds)" in row_a  # only seed 1 reports occlusion
    assert "50% [40, 60] (n=100)" in row_b and "—" in row_b  # B has no occlusion report
    assert _run(results_dir, "--check") == 0
    # a changed report makes the committed table stale
    _report(results_dir / "b.json", {"train": 0.55, "ood_x": 0.2})
    assert _run(results_dir, "--check") == 1
    assert "differ" in capsys.readouterr().err


@pytest.mark.parametrize("markdown, manifest_extra, message", [
    ("no markers here\n", "", "exactly one marked place"),
    ("<!-- results-table: main -->\n<!-- /results-table -->\n<!-- results-table: other -->\n<!-- /results-table -->\n",
     "", "does not define"),
    ("<!-- results-table: main -->\n<!-- /results-table -->\n", "    - {label: C, runs: [missing.json]}\n",
     "cannot read evaluation report"),
    ("<!-- results-table: main -->\n<!-- /results-table -->\n", "    - {label: D}\n", "needs 'label'"),
])
def test_bad_manifests_reports_and_markdown_are_clear_errors(results_dir, capsys, markdown, manifest_extra, message):
    (results_dir / "RESULTS.md").write_text(markdown)
    with (results_dir / "tables.yaml").open("a") as f:
        f.write(manifest_extra)
    assert _run(results_dir) == 2
    assert message in capsys.readouterr().err
    assert (results_dir / "RESULTS.md").read_text() == markdown  # nothing written on error


def test_the_repositorys_results_tables_match_the_committed_reports(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    assert main(["results", "--check"]) == 0


def test_first_k_episodes_recount_a_longer_report_on_the_shorter_ones_seeds(tmp_path):
    episodes = [{"suite": "train", "scenario": scenario, "seed": 1_000_000 + k, "success": k < 2}
                for scenario in ("a", "b") for k in range(10)]
    (tmp_path / "long.json").write_text(json.dumps({"model": "m", "suites": {"train": {}}, "episodes": episodes}))
    (tmp_path / "tables.yaml").write_text("tables:\n  t:\n    - {label: L, runs: [long.json], first: 4}\n")
    (tmp_path / "RESULTS.md").write_text("<!-- results-table: t -->\n<!-- /results-table -->\n")
    assert _run(tmp_path) == 0
    # 2 of the first 4 seeds succeed in each scenario: 4 of 8
    assert "| L | 50% [" in (tmp_path / "RESULTS.md").read_text() and "(n=8)" in (tmp_path / "RESULTS.md").read_text()
    (tmp_path / "tables.yaml").write_text("tables:\n  t:\n    - {label: L, runs: [long.json], first: 0}\n")
    assert _run(tmp_path) == 2


def test_hostile_manifests_and_reports_are_clear_errors(results_dir, capsys):
    (results_dir / "b.json").write_text("[" * 100_000 + "]" * 100_000)  # nesting far past the JSON limit
    assert _run(results_dir) == 2
    assert "b.json" in capsys.readouterr().err
    (results_dir / "tables.yaml").write_bytes("tables: {t: [{label: \xe9}]}".encode("latin-1"))  # not UTF-8
    assert _run(results_dir) == 2
    assert "manifest" in capsys.readouterr().err
