"""`liquid-control info | export` in-process on tiny models."""
import re

import numpy as np
import pytest
import torch

from liquid_control import cli
from liquid_control.inference.runtime import PerceptionRuntime, PolicyRuntime
from liquid_control.models.model_file import save_model
from liquid_control.models.perception import FeatureExtractor, PerceptionConfig
from liquid_control.models.policy import PolicyConfig, PolicyModel, count_effective, count_trainable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A model file with a small wired CfC policy (masked weights) and a small perception net."""
    torch.manual_seed(7)
    policy = PolicyModel(PolicyConfig(feature_size=8, cfc_units=20, cfc_motor_neurons=4)).eval()
    perception = FeatureExtractor(PerceptionConfig(height=32, width=32, conv_channels=(8, 8), keypoints=4,
                                                   feature_size=8)).eval()
    folder = tmp_path_factory.mktemp("tiny")
    path = save_model(folder / "tiny.safetensors", policy=policy, perception=perception)
    policy_only = save_model(folder / "policy_only.safetensors", policy=policy)
    return {"path": path, "policy_only": policy_only, "policy": policy, "perception": perception, "folder": folder}


def test_info_describes_a_model_file(tiny, capsys):
    assert cli.main(["info", str(tiny["path"])]) == 0
    out = capsys.readouterr().out
    policy, perception = tiny["policy"], tiny["perception"]
    assert count_effective(policy) < count_trainable(policy)  # the wiring masks weights out
    assert (f"policy: {count_trainable(policy):,} trainable parameters, "
            f"{count_effective(policy):,} effective after masks") in out
    assert f"perception: {count_trainable(perception):,} trainable parameters" in out
    assert re.search(r"wiring\s+NCP inter/command/motor = \d+/\d+/4, \d+ synapses", out)
    assert re.search(r"conv_channels\s+\[8, 8\]", out)
    assert "torch" in out  # versions first, as without a model


def test_export_writes_verified_onnx_files_and_info_reads_them(tiny, capsys):
    out_dir = tiny["folder"] / "onnx"
    assert cli.main(["export", str(tiny["path"]), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    diffs = [float(v) for v in re.findall(r"max \|onnx - torch\| = (\S+)  OK", out)]
    assert len(diffs) == 2 and max(diffs) <= 1e-5
    # The files work in the runtimes and agree with the model they came from.
    policy_rt = PolicyRuntime(out_dir / "policy.onnx")
    with torch.inference_mode():
        want, _ = tiny["policy"].step(torch.ones(1, 8), torch.zeros(1, 20), torch.full((1, 1), 2.0))
    assert np.abs(policy_rt.step(np.ones(8), 2.0) - want[0].numpy()).max() <= 1e-5
    assert PerceptionRuntime(out_dir / "perception.onnx").features(np.zeros((10, 10, 3), np.uint8), "rgb8").shape == (8,)

    assert cli.main(["info", str(out_dir / "policy.onnx")]) == 0
    out = capsys.readouterr().out
    assert f"policy: {count_trainable(tiny['policy']):,} trainable parameters" in out
    assert "features[batch, 8], state[batch, 20], timespan[batch, 1] -> command[batch, 4]" in out
    assert "vx, vy, vz, yaw_rate" in out


def test_export_of_a_policy_only_file_skips_perception(tiny, capsys):
    out_dir = tiny["folder"] / "policy_only_onnx"
    assert cli.main(["export", str(tiny["policy_only"]), "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "perception not in the model file, skipped" in out
    assert (out_dir / "policy.onnx").is_file() and not (out_dir / "perception.onnx").exists()


def test_info_and_export_report_unusable_files(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 64)
    assert cli.main(["info", str(bad)]) == 2
    assert "error: model file" in capsys.readouterr().err
    assert cli.main(["info", str(tmp_path / "missing.onnx")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    assert cli.main(["export", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "error: model file" in capsys.readouterr().err




def test_bench_lists_the_benchmark_scripts_and_rejects_unknown_names(capsys):
    assert cli.main(["bench"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"policy_latency", "sim_speed", "node_loop", "bag_io"} <= listed
    assert cli.main(["bench", "no_such_benchmark"]) == 2
    assert "no benchmark named 'no_such_benchmark'" in capsys.readouterr().out
