"""Closed-loop evaluation: the deployed-path controller (timespans, hold, fail-safe) and the suite report."""
from __future__ import annotations

import json

import numpy as np
import pytest

from liquid_control.cli import main as cli_main
from liquid_control.evaluation.closed_loop import PolicyController, evaluate_suites, summarise
from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
from liquid_control.learning.recipe import load_config
from liquid_control.learning.train import build_models
from liquid_control.models import save_model
from liquid_control.simulation.drone_world import Frame
from liquid_control.simulation.episode import Observation

PERIOD = 1.0 / 30.0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, repo_root):
    import torch

    torch.manual_seed(0)
    perception, policy = build_models(load_config(repo_root / "config" / "train_tiny.yaml"))
    with torch.no_grad():  # a readout bias so that commands are clearly non-zero
        policy.readout.bias.copy_(torch.tensor([0.5, -0.2, 0.1, 0.3]))
    return save_model(tmp_path_factory.mktemp("model") / "tiny.safetensors", policy=policy, perception=perception)


def _obs(time_s, frame):
    return Observation(time_s, frame, frame, None, np.zeros(3), np.zeros(3), "fly_to_target")


def test_controller_uses_capture_time_timespans_holds_and_fails_safe(tiny_model):
    """The deployed loop behind the sim's Controller interface (its rules in full: test_one_deploy_loop.py)."""
    controller = PolicyController.from_model(tiny_model, backend="torch")
    perception = PerceptionRuntime(tiny_model, backend="torch")
    reference = PolicyRuntime(tiny_model, backend="torch")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    captures = [0.0, PERIOD, 2 * PERIOD, 4 * PERIOD]  # the frame at 3 periods was dropped
    controller.reset(None)
    for k, (image, capture) in enumerate(zip(images, captures)):
        command = controller.act(_obs(capture + 0.01, Frame(image, capture, k)))
        expected = reference.step(perception.features(image, "rgb8"), [1.0, 1.0, 1.0, 2.0][k])
        np.testing.assert_allclose(command, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(controller.timespans, [1.0, 1.0, 1.0, 2.0], rtol=1e-9)
    assert np.abs(command).max() > 0.05

    held = controller.act(_obs(5 * PERIOD, None))  # no new frame: hold the last command
    np.testing.assert_array_equal(held, command)
    same_frame = controller.act(_obs(5 * PERIOD, Frame(images[3], captures[3], 3)))  # already consumed
    np.testing.assert_array_equal(same_frame, command)
    assert len(controller.timespans) == 4
    stale = controller.act(_obs(4 * PERIOD + 0.6, None))  # no image for 0.6 s: hover
    np.testing.assert_array_equal(stale, np.zeros(4))

    state = controller.policy.state.copy()
    bad = controller.act(_obs(1.0, Frame(np.zeros((96, 128), np.uint8), 1.0, 9)))  # rgb8 with 2-D data
    np.testing.assert_array_equal(bad, np.zeros(4))  # perception refused it: still stale, hover
    assert controller.failsafe_events == 1 and controller.watchdog_trips == 1
    np.testing.assert_array_equal(controller.policy.state, state)  # a refused frame never reaches the policy
    back = controller.act(_obs(1.1, Frame(images[0], 1.1, 10)))  # frames are back after the stale gap
    reference.reset()  # the loop restarts the hidden state: the past it integrated is gone
    np.testing.assert_allclose(back, reference.step(perception.features(images[0], "rgb8"), 1.0), rtol=1e-5,
                               atol=1e-6)
    assert controller.timespans[-1] == 1.0


def test_fixed_timespan_ablation_replaces_the_real_timespans(tiny_model):
    perception = PerceptionRuntime(tiny_model, backend="torch")
    reference = PolicyRuntime(tiny_model, backend="torch")
    controller = PolicyController.from_model(tiny_model, backend="torch", fixed_timespan=1.0)
    rng = np.random.default_rng(1)
    captures = [0.0, 3 * PERIOD, 3.5 * PERIOD]  # irregular: real timespans would be 1, 3, 0.5
    for k, capture in enumerate(captures):
        image = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        command = controller.act(_obs(capture + 0.01, Frame(image, capture, k)))
        np.testing.assert_allclose(command, reference.step(perception.features(image, "rgb8"), 1.0),
                                   rtol=1e-5, atol=1e-6)
    assert controller.timespans == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="fixed_timespan"):
        PolicyController.from_model(tiny_model, backend="torch", fixed_timespan=-1.0)


def test_summary_row_known_answer():
    metrics = [
        {"success": True, "time_to_goal_s": 4.0, "final_distance_m": 1.0, "crashed": False, "left_arena": False,
         "reason": "success"},
        {"success": True, "time_to_goal_s": 6.0, "final_distance_m": 1.2, "crashed": False, "left_arena": False,
         "reason": "success"},
        {"success": False, "time_to_goal_s": float("nan"), "final_distance_m": 4.0, "crashed": True,
         "left_arena": False, "reason": "crash"},
        {"success": False, "time_to_goal_s": float("nan"), "final_distance_m": 2.6, "crashed": False,
         "left_arena": False, "reason": "timeout", "failsafe_events": 2},
    ]
    row = summarise(metrics, "x")
    assert row["success"]["successes"] == 2 and row["success"]["rate"] == 0.5
    assert row["success"]["low"] == pytest.approx(0.15003, abs=1e-4)  # Wilson 95% for 2/4
    assert row["success"]["high"] == pytest.approx(0.84997, abs=1e-4)
    assert row["time_to_goal_s"] == 5.0 and row["final_distance_m"] == pytest.approx(2.2)
    assert (row["crashes"], row["timeouts"], row["failsafe_events"]) == (1, 1, 2)


def test_evaluate_suite_report_json_markdown_and_plots(tmp_path, tiny_model, tiny_suite, capsys):
    report = evaluate_suites(tiny_model, [str(tiny_suite)], duration_s=1.0, backend="torch", progress=False,
                             plots_dir=tmp_path / "plots")
    assert len(report.episodes) == 2 and [m["seed"] for m in report.episodes] == [1_000_000, 1_000_001]
    total = report.suites["tiny_suite"]["total"]
    assert total["episodes"] == 2 and total["success"]["trials"] == 2
    assert 0.0 <= total["success"]["low"] <= total["success"]["high"] <= 1.0
    assert np.isfinite(total["final_distance_m"]) and isinstance(total["crashes"], int)
    for m in report.episodes:
        assert m["policy_steps"] >= 20 and m["steps"] == 30  # the policy ran on (nearly) every 30 Hz frame
    assert sorted(p.name for p in (tmp_path / "plots" / "tiny_suite").iterdir()) == \
        ["train_fly_to_target_1000000.png", "train_fly_to_target_1000001.png"]
    table = report.markdown()
    assert "| tiny_suite | train_fly_to_target | 2 |" in table and "| tiny_suite | **all** | 2 |" in table

    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    code = cli_main(["evaluate", "--model", str(tiny_model), "--suite", str(tiny_suite), "--episodes", "1",
                     "--duration", "0.5", "--backend", "torch", "--workers", "2", "--json", str(out_json),
                     "--markdown", str(out_md), "--no-progress"])
    assert code == 0
    data = json.loads(out_json.read_text())
    assert set(data["suites"]["tiny_suite"]) == {"total", "scenarios", "seeds"}
    assert data["suites"]["tiny_suite"]["total"]["episodes"] == 1
    assert "success [95% Wilson]" in out_md.read_text()
    assert "success [95% Wilson]" in capsys.readouterr().out


def test_evaluate_records_one_readable_bag_per_episode(tmp_path, tiny_model, tiny_suite, capsys):
    from liquid_control.bags.reader import BagReader

    code = cli_main(["evaluate", "--model", str(tiny_model), "--suite", str(tiny_suite), "--episodes", "1",
                     "--duration", "0.5", "--backend", "torch", "--record", str(tmp_path / "bags"), "--no-progress"])
    assert code == 0
    assert f"episode bags in {tmp_path / 'bags'}" in capsys.readouterr().out
    (bag,) = (tmp_path / "bags" / "tiny_suite").iterdir()
    assert bag.name == "train_fly_to_target_1000000"
    with BagReader(bag) as reader:
        images = list(reader.images())
        commands = list(reader.commands())
    assert len(images) >= 10 and len(commands) >= 10  # 0.5 s at 30 Hz
    stamps = [frame.stamp_ns for frame in images]
    assert stamps == sorted(stamps) and images[0].image.dtype == np.uint8


def test_evaluate_refuses_bad_inputs(tmp_path, tiny_suite, capsys):
    assert cli_main(["evaluate", "--model", str(tmp_path / "missing.safetensors"), "--no-progress"]) == 2
    assert "missing.safetensors" in capsys.readouterr().err
    with pytest.raises(ValueError, match="workers"):
        evaluate_suites(tmp_path / "x.safetensors", [str(tiny_suite)], workers=0)


def _report(**suites):
    return {"suites": {name: {"total": {"success": {"successes": k, "trials": n, "rate": k / n,
                                                    "low": max(k / n - 0.1, 0.0), "high": min(k / n + 0.1, 1.0)}}}
                       for name, (k, n) in suites.items()}}


def test_compare_tabulates_models_by_suite(tmp_path, capsys):
    from liquid_control.evaluation.results_tables import comparison_markdown

    table = comparison_markdown([("A", [_report(ood_range=(50, 100)), _report(train=(90, 100))]),
                                 ("B", [_report(train=(3, 4))])])
    lines = table.splitlines()
    assert lines[0] == "| model | `train` | `ood_range` |"  # train first
    assert lines[2] == "| A | 90% [80, 100] (n=100) | 50% [40, 60] (n=100) |"
    assert lines[3] == "| B | 75% [65, 85] (n=4) | — |"
    with pytest.raises(ValueError, match="twice"):
        comparison_markdown([("A", [_report(train=(1, 2)), _report(train=(2, 2))])])
    # The same label for several runs = training seeds: mean and min-max per suite.
    seeds = comparison_markdown([("C", [_report(train=(80, 100))]), ("C", [_report(train=(90, 100))]),
                                 ("C", [_report(train=(70, 100), ood_range=(5, 10))])])
    assert seeds.splitlines()[2] == "| C | 80% (70-90, 3 seeds) | 50% (50-50, 1 seeds) |"

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report(train=(9, 10))))
    b.write_text("{not json")
    assert cli_main(["evaluate", "--compare", f"CfC={a}", "--markdown", str(tmp_path / "t.md")]) == 0
    assert "| CfC | 90% [80, 100] (n=10) |" in capsys.readouterr().out
    assert (tmp_path / "t.md").read_text().startswith("| model |")
    assert cli_main(["evaluate", "--compare", f"CfC={b}"]) == 2
    assert "cannot read evaluation report" in capsys.readouterr().err
    assert cli_main(["evaluate", "--compare", "no-equals-sign"]) == 2
    assert cli_main(["evaluate"]) == 2
    assert "needs --model" in capsys.readouterr().err
