"""Rollouts and sweeps on a local Ray of 2 CPUs (issue #15): same results as the process pool, retries of
dead workers (not of bad input), resume after an interrupted collect, a tiny sweep end to end.

One local Ray for the whole module (starting one takes ~8 s here); `collect`/`evaluate`/`sweep` find it
running and use it, as they would use a cluster given by --ray ADDRESS."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from liquid_control.cli import main as cli_main  # noqa: E402
from liquid_control.learning.collect import CollectConfig, collect  # noqa: E402
from liquid_control.learning.dataset import list_shards, read_shard  # noqa: E402
from liquid_control.util.executors import RayExecutor, SerialExecutor, start_local_ray  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    for attempt in (1, 2):
        try:
            start_local_ray(ray, 2, log_to_driver=False)
            break
        except Exception as err:  # Ray waits a fixed 30 s for its raylet, too short on a saturated machine
            if attempt == 2 or "timed out during startup" not in str(err):
                raise
            ray.shutdown()
    # This module's helper functions travel to the workers by value (the workers cannot import a test module).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _arrays(folder):
    shards = {p.name: read_shard(p) for p in list_shards(folder)}
    return {name: (e.images, e.labels, e.commands, e.capture_times_s, e.positions, e.meta["controller"])
            for name, e in shards.items()}


def test_a_run_local_ray_lives_on_loopback(local_ray):
    assert [node["NodeManagerAddress"] for node in local_ray.nodes()] == ["127.0.0.1"]


def test_collect_on_ray_equals_the_process_pool_and_resumes_after_an_interrupt(local_ray, tmp_path, tiny_suite):
    config = CollectConfig(height=12, width=16, duration_s=0.5, perturbed_fraction=0.5)
    pool = collect(str(tiny_suite), tmp_path / "pool", workers=2, base_seed=20, config=config, progress=False)
    assert pool.written == 2

    # Interrupted after the first finished episode (Ctrl-C): that shard is kept, the rest are not written.
    seen = []

    def stop(name, seed):
        seen.append(seed)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        collect(str(tiny_suite), tmp_path / "ray", workers=2, base_seed=20, config=config, progress=False,
                on_episode=stop, ray_address=None)
    assert len(list_shards(tmp_path / "ray")) == 1
    resumed = collect(str(tiny_suite), tmp_path / "ray", workers=2, base_seed=20, config=config, progress=False,
                      ray_address=None)
    assert (resumed.skipped_existing, resumed.written) == (1, 1)
    runs = json.loads((tmp_path / "ray" / "collection.json").read_text())["runs"]
    assert runs[-1]["executor"] == "ray local"

    want, got = _arrays(tmp_path / "pool"), _arrays(tmp_path / "ray")
    assert sorted(got) == sorted(want) and len(got) == 2
    for name in want:
        for a, b in zip(want[name], got[name]):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=name)
            else:
                assert a == b, name


def test_evaluate_on_ray_equals_the_process_pool(local_ray, tmp_path, tiny_suite, repo_root):
    import torch

    from liquid_control.evaluation.closed_loop import evaluate_suites, finite_json
    from liquid_control.learning.recipe import load_config
    from liquid_control.learning.train import build_models
    from liquid_control.models import save_model

    torch.manual_seed(0)
    perception, policy = build_models(load_config(repo_root / "config" / "train_tiny.yaml"))
    with torch.no_grad():
        policy.readout.bias.copy_(torch.tensor([0.5, -0.2, 0.1, 0.3]))
    model = save_model(tmp_path / "m.safetensors", policy=policy, perception=perception)
    common = dict(duration_s=0.5, backend="torch", progress=False)
    pool = evaluate_suites(model, [str(tiny_suite)], workers=2, **common)
    on_ray = evaluate_suites(model, [str(tiny_suite)], workers=2, ray_address=None, **common)
    assert [m["seed"] for m in on_ray.episodes] == [1_000_000, 1_000_001]
    def same(a, b):  # NaN (time to goal of a failed episode) compares as null
        return json.dumps(finite_json(a), sort_keys=True) == json.dumps(finite_json(b), sort_keys=True)

    assert same(on_ray.episodes, pool.episodes)  # every metric of every episode, in job order
    assert same(on_ray.suites, pool.suites)
    assert len({m["final_distance_m"] for m in pool.episodes}) == 2  # two different episodes

    out = tmp_path / "cli.json"  # the CLI flag, on the running Ray
    assert cli_main(["evaluate", "--model", str(model), "--suite", str(tiny_suite), "--episodes", "1", "--duration",
                     "0.5", "--backend", "torch", "--ray", "--json", str(out), "--no-progress"]) == 0
    assert same(json.loads(out.read_text())["episodes"][0], pool.episodes[0])


def _dies_once(job):
    """Kills its own worker process the first time it runs job 1 (marker file), like an OOM kill."""
    marker, value = job
    if value == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return value * 10, os.getpid()


def _bad_input(job):
    marker, value = job
    with open(marker, "a") as handle:
        handle.write("x")
    if value == 2:
        raise ValueError(f"bad input {value}")
    return value


def test_a_killed_worker_is_retried_and_a_raising_job_is_not(local_ray, tmp_path):
    marker = str(tmp_path / "died")
    results = dict(RayExecutor().run(_dies_once, [(marker, k) for k in range(4)]))
    assert os.path.exists(marker)  # job 1's first worker did die
    assert {k: v[0] for k, v in results.items()} == {0: 0, 1: 10, 2: 20, 3: 30}

    count = tmp_path / "calls"
    with pytest.raises(ValueError, match="bad input 2"):  # the job's own exception, as in a process pool
        dict(RayExecutor().run(_bad_input, [(str(count), 2)]))
    assert count.read_text() == "x"  # tried once, never retried
    assert list(SerialExecutor().run(_bad_input, [(str(count), 1)])) == [(0, 1)]


def test_sweep_trains_evaluates_tabulates_and_skips_finished_runs(local_ray, tmp_path, repo_root, tiny_suite,
                                                                   capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(f"""
name: tiny_test
models: [tiny]
recipe: {repo_root}/config/train_{{model}}.yaml
seeds: [0, 1]
overrides:
  optim.epochs: 1
  data.sources: [{tmp_path / 'data'}]
  data.collect: {{suite: {tiny_suite}, episodes: 2, workers: 1, seed: 0, perturbed_fraction: 0.5, duration_s: 0.7}}
  data.validation_fraction: 0.5
evaluate: {{suites: [{tiny_suite}], episodes: 1, duration_s: 0.5, backend: torch}}
out_dir: {tmp_path / 'out'}
""")
    assert cli_main(["sweep", "--config", str(sweep), "--ray", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 runs trained, 0 finished before" in printed
    assert len(list_shards(tmp_path / "data")) == 2  # collected once for both runs
    table = (tmp_path / "out" / "comparison.md").read_text()
    assert "| tiny |" in table and "2 seeds" in table and "`tiny_suite`" in table
    data = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert data["rows"][0]["label"] == "tiny" and data["rows"][0]["cells"]["tiny_suite"]["runs"] == 2
    for seed in (0, 1):
        run = tmp_path / "out" / "runs" / f"tiny-default-seed{seed}"
        report = json.loads((run / "report.json").read_text())
        assert report["suites"]["tiny_suite"]["total"]["episodes"] == 1
        assert report["training"]["epochs_run"] == 1
        assert (run / "model.safetensors").is_file() and (run / "train" / "train_log.csv").is_file()
    # The two seeds trained different models.
    a, b = ((tmp_path / "out" / "runs" / f"tiny-default-seed{s}" / "model.safetensors").read_bytes() for s in (0, 1))
    assert a != b

    # Re-run: every run is finished, nothing trains (a run without its report would train again:
    # tests/test_sweep_config.py checks which runs count as finished).
    mtime = (tmp_path / "out" / "runs" / "tiny-default-seed0" / "model.safetensors").stat().st_mtime_ns
    assert cli_main(["sweep", "--config", str(sweep), "--ray", "--no-progress"]) == 0
    assert "0 runs trained, 2 finished before" in capsys.readouterr().out
    assert (tmp_path / "out" / "runs" / "tiny-default-seed0" / "model.safetensors").stat().st_mtime_ns == mtime
    assert "2 seeds" in (tmp_path / "out" / "comparison.md").read_text()


def test_bad_addresses_and_a_missing_ray_are_one_error_line(local_ray, tmp_path, tiny_suite, capsys, monkeypatch):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address, message in ((f"127.0.0.1:{port}", "no Ray cluster reachable"), ("not an address", "HOST:PORT"),
                             ("host:99999", "HOST:PORT")):
        code = cli_main(["collect", "--suite", str(tiny_suite), "--out", str(tmp_path / "o"), "--ray", address,
                         "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.startswith("error: --ray") and "Traceback" not in err
    assert not list_shards(tmp_path / "o")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = cli_main(["collect", "--suite", str(tiny_suite), "--out", str(tmp_path / "o"), "--ray", "--no-progress"])
    assert code == 2 and "pip install ray==2.60.0" in capsys.readouterr().err
