"""The expert's control law: known answers on synthetic states, limits, smoothness, and closed-loop
success against an ideal velocity-tracking vehicle (the physics version is in test_env.py)."""
import math

import numpy as np
import pytest

from liquid_control.simulation.expert import Expert, ExpertConfig, Perturbation, PerturbationConfig
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import load_scenario
from liquid_control.simulation.tasks import make_task, wrap_angle
from tests.test_tasks import DT, Camera, state


def test_centred_target_far_ahead_gives_full_forward_speed_only():
    expert = Expert(Camera())
    cmd = expert.act(state((0, 0, 1)), np.array([6.0, 0.0, 1.0]))
    assert cmd == pytest.approx([ExpertConfig().max_forward_mps, 0.0, 0.0, 0.0])


def test_target_off_centre_turns_towards_it_and_slows():
    expert = Expert(Camera())
    left = expert.act(state((0, 0, 1)), np.array([4.0, 4.0 * math.tan(math.radians(20)), 1.0]))
    right = expert.act(state((0, 0, 1)), np.array([4.0, -4.0 * math.tan(math.radians(20)), 1.0]))
    assert left[3] == pytest.approx(2.0 * math.radians(20)) and right[3] == pytest.approx(-left[3])
    centred = expert.act(state((0, 0, 1)), np.array([4.0, 0.0, 1.0]))
    assert 0 < left[0] < centred[0]


def test_at_standoff_it_stops_and_too_close_it_backs_off():
    expert = Expert(Camera())
    assert expert.act(state((0, 0, 1)), np.array([1.0, 0.0, 1.0])) == pytest.approx(np.zeros(4), abs=1e-9)
    assert expert.act(state((0, 0, 1)), np.array([0.6, 0.0, 1.0]))[0] < 0
    # Height: climbs to a target above, within the vertical limit.
    assert expert.act(state((0, 0, 1)), np.array([1.0, 0.0, 3.0]))[2] == pytest.approx(0.8)


def test_chase_uses_its_own_forward_gain():
    """Chase: speed = chase gain x distance error (+ the target's velocity); with the stiff option (1.6) a
    follower without the feed-forward, which one frame cannot show, keeps a 1 m/s target inside the band."""
    config = ExpertConfig(chase_forward_gain=1.6)
    target = np.array([1.8, 0.0, 1.0])  # 0.3 m beyond the chase stand-off, 0.8 m beyond the other one
    chase = Expert(Camera(), config, task="chase").act(state((0, 0, 1)), target, np.zeros(3))
    other = Expert(Camera(), config, task="fly_to_target").act(state((0, 0, 1)), target)
    assert chase[0] == pytest.approx(config.chase_forward_gain * 0.3)
    assert other[0] == pytest.approx(min(config.forward_gain * 0.8, math.sqrt(2 * config.brake_accel_mps2 * 0.8)))
    moving = Expert(Camera(), config, task="chase").act(state((0, 0, 1)), target, np.array([0.5, 0.0, 0.0]))
    assert moving[0] == pytest.approx(chase[0] + 0.5)
    default = Expert(Camera(), task="chase").act(state((0, 0, 1)), target, np.zeros(3))
    assert default[0] == pytest.approx(ExpertConfig().chase_forward_gain * 0.3)  # the shipped labels' 0.8
    # Steady lag of a feedback-only follower of a 1 m/s target: 1 / gain, inside the band's 0.75 m margin.
    assert 1.0 / config.chase_forward_gain < 0.75 < 1.0 / ExpertConfig().chase_forward_gain


def test_size_referenced_standoff_holds_the_apparent_size():
    """With `standoff_reference_size_m` the expert measures range as a camera would (assuming every target
    has the reference size): a target twice the reference is held at twice the stand-off, so the label is a
    function of what one frame shows. Without the target's size it refuses rather than guess."""
    config = ExpertConfig(standoff_reference_size_m=0.35)
    for task, standoff in (("fly_to_target", config.standoff_m), ("chase", config.chase_standoff_m)):
        big = Expert(Camera(), config, task=task, target_size_m=0.70)
        held = big.act(state((0, 0, 1)), np.array([2 * standoff, 0.0, 1.0]), np.zeros(3))
        assert held == pytest.approx(np.zeros(4), abs=1e-9)
        reference = Expert(Camera(), config, task=task, target_size_m=0.35)
        assert reference.act(state((0, 0, 1)), np.array([2 * standoff, 0.0, 1.0]), np.zeros(3))[0] > 0.1
        # The same apparent size gives the same command: half the size at half the range.
        small = Expert(Camera(), config, task=task, target_size_m=0.175)
        near = small.act(state((0, 0, 1.2)), np.array([0.6 * standoff, 0.0, 1.0]), np.zeros(3))
        far = reference.act(state((0, 0, 1.4)), np.array([1.2 * standoff, 0.0, 1.0]), np.zeros(3))
        assert far[0] > 0.05 and near[[0, 1, 3]] == pytest.approx(far[[0, 1, 3]])
    metric = Expert(Camera(), ExpertConfig(), target_size_m=0.70)  # default: metric stand-off, size unused
    assert metric.act(state((0, 0, 1)), np.array([1.0, 0.0, 1.0])) == pytest.approx(np.zeros(4), abs=1e-9)
    with pytest.raises(ValueError, match="target's size"):
        Expert(Camera(), config).act(state((0, 0, 1)), np.array([3.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="standoff_reference_size_m"):
        ExpertConfig(standoff_reference_size_m=0.0)


def test_unseen_target_means_stop_and_search_ccw_or_towards_last_seen_side():
    expert = Expert(Camera())
    behind = np.array([-3.0, -0.5, 1.0])
    cmd = expert.act(state((0, 0, 1)), behind)
    assert cmd[0] == 0 and cmd[3] == pytest.approx(ExpertConfig().search_yaw_rate_radps)
    # Seen on the right a moment ago, now out of view: search to the right (clockwise).
    expert.act(state((0, 0, 1), t=0.0), np.array([3.0, -2.0, 1.0]))
    cmd = expert.act(state((0, 0, 1), t=0.5), behind)
    assert cmd[3] == pytest.approx(-ExpertConfig().search_yaw_rate_radps)
    cmd = expert.act(state((0, 0, 1), t=2.0), behind)  # memory (1 s) expired: back to CCW
    assert cmd[3] > 0


def test_commands_stay_within_limits_and_are_continuous():
    rng = np.random.default_rng(0)
    expert = Expert(Camera(), task="chase")
    limits = ExpertConfig().limits()
    for _ in range(300):
        s = state(rng.uniform(-5, 5, 3) + [0, 0, 6], yaw=rng.uniform(-math.pi, math.pi))
        cmd = expert.act(s, rng.uniform(-5, 5, 3) + [0, 0, 6], rng.uniform(-1, 1, 3))
        assert np.all(np.abs(cmd) <= limits + 1e-12)
    # Continuity: a 1 cm / 0.2° change of state moves the command by little while the target is seen.
    base = state((0, 0, 1), yaw=0.1)
    moved = state((0.01, 0, 1), yaw=0.1 + math.radians(0.2))
    a = Expert(Camera()).act(base, np.array([4.0, 0.5, 1.2]))
    b = Expert(Camera()).act(moved, np.array([4.0, 0.5, 1.2]))
    assert np.max(np.abs(a - b)) < 0.02


def test_obstacle_clearance_brakes_for_objects_in_the_forward_corridor_only():
    """With obstacle_clearance_m the forward speed is capped to what can stop that far from an object's
    surface (sqrt(2 a gap)); objects beside, above or behind the corridor, or no clearance, change nothing."""
    config = ExpertConfig(obstacle_clearance_m=0.5)
    target = np.array([8.0, 0.0, 1.0])
    free = Expert(Camera(), config).act(state((0, 0, 1)), target)[0]
    assert free == pytest.approx(config.max_forward_mps)
    expert = Expert(Camera(), config)
    expert.reset("fly_to_target", obstacles=[((2.0, 0.2, 1.1), 0.3)])  # 2 m ahead: gap 2 - 0.3 - 0.5 = 1.2 m
    assert expert.act(state((0, 0, 1)), target)[0] == pytest.approx(math.sqrt(2 * config.brake_accel_mps2 * 1.2))
    expert.reset("fly_to_target", obstacles=[((0.7, 0.0, 1.0), 0.3)])  # inside the clearance: stop
    assert expert.act(state((0, 0, 1)), target)[0] == pytest.approx(0.0)
    for beside in [((2.0, 1.2, 1.0), 0.3), ((2.0, 0.0, 2.5), 0.3), ((-1.0, 0.0, 1.0), 0.3)]:
        expert.reset("fly_to_target", obstacles=[beside])
        assert expert.act(state((0, 0, 1)), target)[0] == pytest.approx(free), beside
    ignoring = Expert(Camera())
    ignoring.reset("fly_to_target", obstacles=[((0.7, 0.0, 1.0), 0.3)])
    assert ignoring.act(state((0, 0, 1)), target)[0] == pytest.approx(free)  # default: obstacles ignored
    with pytest.raises(ValueError, match="obstacle_clearance_m"):
        ExpertConfig(obstacle_clearance_m=-0.5)


def test_bad_target_is_a_clear_error():
    with pytest.raises(ValueError, match="target_position"):
        Expert(Camera()).act(state((0, 0, 1)), np.array([np.nan, 0, 1]))


def test_perturbation_is_seeded_and_zero_mean():
    a, b = Perturbation(PerturbationConfig(), seed=3), Perturbation(PerturbationConfig(), seed=3)
    xs = [a.apply(np.zeros(4), DT) for _ in range(3000)]
    ys = [b.apply(np.zeros(4), DT) for _ in range(3000)]
    assert np.array_equal(xs, ys)
    assert np.all(np.abs(np.mean(xs, axis=0)) < 0.15) and np.std(np.array(xs)[:, 0]) > 0.1


def kinematic_episode(scenario, seed, lag_s=0.2):
    """Fly an episode with an ideal vehicle whose body velocity follows the command with a first-order lag."""
    spec = sample_episode(load_scenario(scenario), seed)
    task = make_task(spec, Camera())
    expert = Expert(Camera(), task=spec.task)
    pos, yaw, vel, t = np.array(spec.start_position), spec.start_yaw_rad, np.zeros(3), 0.0
    task.begin(state(pos, yaw, vel, t))
    alpha = 1 - math.exp(-DT / lag_s)
    prev = None
    max_jump = 0.0
    while not task.status.done:
        cmd = expert.act(state(pos, yaw, vel, t), task.target_position(t), task.target_velocity(t))
        if prev is not None:
            max_jump = max(max_jump, float(np.max(np.abs(cmd - prev))))
        prev = cmd
        c, s = math.cos(yaw), math.sin(yaw)
        want = np.array([c * cmd[0] - s * cmd[1], s * cmd[0] + c * cmd[1], cmd[2]])
        vel = vel + alpha * (want - vel)
        pos, yaw, t = pos + vel * DT, wrap_angle(yaw + cmd[3] * DT), t + DT
        task.update(state(pos, yaw, vel, t), False, DT)
    return task, max_jump


@pytest.mark.parametrize("scenario", ["train_fly_to_target", "train_target_loop", "train_chase",
                                      "ood_range_target_loop"])
def test_expert_law_solves_tasks_with_an_ideal_vehicle(scenario):
    for seed in range(4):
        task, max_jump = kinematic_episode(scenario, seed)
        assert task.status.success, (scenario, seed, task.metrics())
        # Smooth: no step-to-step jump above 0.35 (m/s or rad/s) except at a loop target switch.
        if task.spec.task != "target_loop":
            assert max_jump < 0.35, (scenario, seed, max_jump)


def test_expert_cli_overrides_a_gain_and_flies_without_feedforward(tmp_path, capsys):
    """`liquid-control expert --set FIELD=VALUE --no-feedforward`: the chase is flown differently, bad
    overrides are one error line (exit 2) before anything flies."""
    import json

    from liquid_control.cli import main as cli_main
    from liquid_control.commands.expert import expert_config

    assert expert_config(["chase_forward_gain=1.6", "yaw_gain=3"]) == ExpertConfig(chase_forward_gain=1.6, yaw_gain=3.0)
    with pytest.raises(ValueError, match="yaw_gain=0.0"):  # the range is the config's own check
        ExpertConfig(yaw_gain=0.0)
    paths = {}
    runs = {"ff": [], "no_ff_stiff": ["--no-feedforward", "--set", "chase_forward_gain=1.6"], "no_ff": ["--no-feedforward"]}
    for name, extra in runs.items():
        paths[name] = tmp_path / f"{name}.json"
        assert cli_main(["expert", "--suite", "train", "--episodes", "1", "--duration", "3", "--no-progress",
                         "--json", str(paths[name]), *extra]) == 0
    capsys.readouterr()
    chase = {name: next(m for m in json.loads(path.read_text()) if m["task"] == "chase")
             for name, path in paths.items()}
    # The target moves away at >= 0.5 m/s: without its velocity the expert lags, less so with a stiffer gain.
    distance = {name: m["final_distance_m"] for name, m in chase.items()}
    assert distance["ff"] < distance["no_ff_stiff"] < distance["no_ff"], distance
    for bad, match in [("nope=1", "FIELD=VALUE"), ("forward_gain=x", "number"), ("yaw_gain=-1", "number"),
                       ("forward_gain=nan", "number"), ("forward_gain", "FIELD=VALUE")]:
        assert cli_main(["expert", "--suite", "train", "--set", bad, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and match in err, err
