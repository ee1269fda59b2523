"""`train` under torchrun (2 CPU processes, gloo), resuming from the run's checkpoint, and bad distributed setups."""
from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import pytest
import torch

from liquid_control.cli import main as cli_main
from liquid_control.learning import distributed
from liquid_control.learning.dataset import load_episodes, split_episodes
from liquid_control.learning.recipe import load_config
from liquid_control.learning.train import CHECKPOINT, AuxHeads, build_models, evaluate_loss, train
from liquid_control.models import load_model
from test_train import PERIOD, _synthetic_shards

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(repo_root, cwd, args: list[str]) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=2 -m liquid_control.cli train ...` (torchrun is python -m torch.distributed.run)
    with this checkout's code, on a free loopback port."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join([str(repo_root), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
               f"--master_port={_free_port()}", "-m", "liquid_control.cli", "train", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _rows(path) -> list[dict[str, str]]:
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_two_ranks_learn_in_sync_write_one_model_and_resume(tmp_path, repo_root):
    data = tmp_path / "data"
    _synthetic_shards(data)
    model, run = tmp_path / "out" / "ddp.safetensors", tmp_path / "out" / "run"
    recipe = str(repo_root / "config" / "train_tiny.yaml")
    common = ["--config", recipe, "--set", f"data.sources=[{data}]", "--set", "data.collect=null",
              "--set", "optim.threads=1", "--set", "optim.aux_weight=0.5",  # the aux head trains under DDP too
              "--set", f"output.model={model}", "--set", f"output.run_dir={run}", "--no-progress"]
    first = _torchrun(repo_root, tmp_path, [*common, "--set", "optim.epochs=3"])
    assert first.returncode == 0, first.stderr[-4000:]
    assert first.stdout.count("trained tiny_cfc") == 1, first.stdout  # rank 0 reports, rank 1 keeps quiet
    assert "distributed: 2 ranks (gloo, cpu)" in first.stderr
    first_rows = _rows(run / "train_log.csv")
    assert [int(r["epoch"]) for r in first_rows] == [1, 2, 3]

    # The loss falls from the shared initial weights (both ranks seed torch alike).
    config = load_config(recipe, {"data.sources": [str(data)], "data.collect": None})
    torch.manual_seed(config.seed)
    perception, policy = build_models(config)
    _, val = split_episodes(load_episodes([data], 24, 32), config.data.validation_fraction, config.seed)
    before = evaluate_loss(perception, policy, val, PERIOD, policy.command_scale)
    assert min(float(r["val_loss"]) for r in first_rows) < 0.8 * before, (before, first_rows)

    # Resume on both ranks and go on to 5 epochs: the log continues, the step count goes on.
    second = _torchrun(repo_root, tmp_path, [*common, "--set", "optim.epochs=5", "--resume"])
    assert second.returncode == 0, second.stderr[-4000:]
    assert "resume:" in second.stderr and "after epoch 3" in second.stderr
    rows = _rows(run / "train_log.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [r["val_loss"] for r in rows[:3]] == [r["val_loss"] for r in first_rows]
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[3] - steps[2] == steps[1] - steps[0] > 0

    # Exactly one model file, written by rank 0; it loads and holds rank 0's best weights.
    assert sorted(p.name for p in tmp_path.rglob("*.safetensors")) == ["ddp.safetensors"]
    saved = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 5 and saved["world_size"] == 2
    bundle = load_model(model)
    assert bundle.training["best_epoch"] == saved["best_epoch"]
    for name, value in bundle.policy.state_dict().items():
        assert torch.equal(value, saved["best_policy"][name]), name
    for name, value in bundle.perception.state_dict().items():
        assert torch.equal(value, saved["best_perception"][name]), name
    # After the last epoch both ranks held the same weights (DDP kept them in sync), and those are the
    # weights rank 0 put in the checkpoint.
    digests = saved["rank_weight_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    perception.load_state_dict(saved["perception"])
    policy.load_state_dict(saved["policy"])
    head = AuxHeads(perception.config.feature_size, policy.state_size, aux_weight=0.5, motion_weight=0.0)
    head.load_state_dict(saved["aux_head"])
    assert distributed.weights_digest(perception, policy, head) == digests[0]
    # The sampler is sharded: each rank drew its own streams (seeded by (seed, rank)).
    assert saved["rng_states"][0] != saved["rng_states"][1]


def test_one_process_resumes_from_the_checkpoint_and_refuses_a_bad_one(tmp_path, repo_root, capsys):
    data = tmp_path / "data"
    _synthetic_shards(data, episodes=3, frames=20)
    recipe = str(repo_root / "config" / "train_tiny.yaml")
    overrides = {"data.sources": [str(data)], "data.collect": None, "optim.epochs": 2, "optim.threads": 1,
                 "output.model": str(tmp_path / "m.safetensors"), "output.run_dir": str(tmp_path / "run")}
    fresh = train(load_config(recipe, {**overrides, "output.run_dir": str(tmp_path / "fresh")}), progress=False,
                  resume=True)  # --resume without a checkpoint starts from the beginning
    assert [h["epoch"] for h in fresh.history] == [1, 2]
    assert "no checkpoint" in capsys.readouterr().err
    first = train(load_config(recipe, overrides), progress=False)
    resumed = train(load_config(recipe, {**overrides, "optim.epochs": 3}), progress=False, resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert resumed.history[:2] == first.history  # restored, not re-run
    assert resumed.history[2]["step"] - resumed.history[1]["step"] == first.history[0]["step"]
    assert resumed.rank == 0 and resumed.world_size == 1
    done = train(load_config(recipe, {**overrides, "optim.epochs": 3}), progress=False, resume=True)
    assert done.history == resumed.history  # nothing left to train
    (tmp_path / "run" / CHECKPOINT).write_bytes(b"not a checkpoint")
    args = ["train", "--config", recipe, "--set", f"data.sources=[{data}]", "--set", "data.collect=null",
            "--set", f"output.model={tmp_path / 'm.safetensors'}", "--set", f"output.run_dir={tmp_path / 'run'}",
            "--no-progress", "--resume"]
    assert cli_main(args) == 2
    assert "not a readable training checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("env, extra, message", [
    ({"WORLD_SIZE": "2"}, [], "RANK"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, [], "MASTER_ADDR"),
    ({"RANK": "zero", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, [],
     "RANK='zero' is not an integer"),
    ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, [],
     "inconsistent"),
    ({}, ["--set", "distributed.backend=mpi_nope"], "distributed.backend must be one of"),
    ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
     ["--set", "distributed.backend=nccl"], "nccl needs the training on CUDA"),
    ({}, ["--set", "optim.device=tpu"], "optim.device must be"),
], ids=["world_size_without_rank", "no_master_address", "rank_not_a_number", "rank_out_of_range",
        "unknown_backend", "nccl_on_cpu", "unknown_device"])
def test_bad_distributed_setup_is_one_clear_error(monkeypatch, tmp_path, repo_root, capsys, env, extra, message):
    for name in TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = cli_main(["train", "--config", str(repo_root / "config" / "train_tiny.yaml"), "--set",
                     f"data.sources=[{tmp_path / 'none'}]", "--set", "data.collect=null",
                     "--set", f"output.run_dir={tmp_path / 'run'}", "--no-progress", *extra])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()  # refused before anything ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(tmp_path, repo_root, capsys):
    code = cli_main(["train", "--config", str(repo_root / "config" / "train_tiny.yaml"), "--set",
                     "optim.device=cuda", "--set", f"output.run_dir={tmp_path / 'run'}", "--no-progress"])
    assert code == 2 and "CUDA is not available" in capsys.readouterr().err
