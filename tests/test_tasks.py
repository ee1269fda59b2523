"""Task predicates and metrics on synthetic states (no physics), and the camera projection."""
import math

import numpy as np
import pytest

from liquid_control.simulation.camera import CameraConfig
from liquid_control.simulation.quadrotor import DroneState
from liquid_control.simulation.sampling import sample_episode
from liquid_control.simulation.scenario import load_scenario
from liquid_control.simulation.tasks import (
    Chase, FlyToTarget, TargetLoop, make_task, project_point, rotation_from_rpy,
)

DT = 1.0 / 30.0


def Camera(**overrides):  # 128x96, 60° vertical FOV; lens at the centre of mass keeps known answers simple
    return CameraConfig(**{"mount_offset_m": (0.0, 0.0, 0.0), **overrides})


def state(position, yaw=0.0, velocity=(0.0, 0.0, 0.0), t=0.0, roll=0.0, pitch=0.0):
    rot = rotation_from_rpy(roll, pitch, yaw)
    v = np.asarray(velocity, dtype=float)
    return DroneState(time_s=t, position=np.asarray(position, dtype=float), quaternion=np.array([0, 0, 0, 1.0]),
                      rpy=np.array([roll, pitch, yaw]), velocity_world=v, velocity_body=rot.T @ v,
                      angular_velocity_body=np.zeros(3), rpm=np.zeros(4), rotation=rot)


def fly_spec(target=(5.0, 0.0, 1.0), duration=20.0):
    spec = sample_episode(load_scenario("train_fly_to_target"), 0)
    from dataclasses import replace
    return replace(spec, targets=(tuple(target),), start_position=(0.0, 0.0, 1.0), start_yaw_rad=0.0,
                   duration_s=duration)


# ---------------------------------------------------------------- projection

def test_projection_known_answers():
    cam = Camera()
    focal = 48.0 / math.tan(math.radians(30.0))
    cx, cy = 63.5, 47.5  # principal point of a 128x96 image, pixel centres at integers
    ahead = project_point(state((0, 0, 1)), np.array([4.0, 0.0, 1.0]), cam)
    assert (ahead.u, ahead.v, ahead.depth_m) == pytest.approx((cx, cy, 4.0)) and ahead.centred
    left_up = project_point(state((0, 0, 1)), np.array([4.0, 1.0, 1.5]), cam)
    assert left_up.u == pytest.approx(cx - focal * 0.25) and left_up.v == pytest.approx(cy - focal * 0.125)
    behind = project_point(state((0, 0, 1)), np.array([-4.0, 0.0, 1.0]), cam)
    assert not behind.in_view
    # Yawing the drone 90° left puts a target on +y straight ahead.
    assert project_point(state((0, 0, 1), yaw=math.pi / 2), np.array([0.0, 3.0, 1.0]), cam).centred
    # Off to the side by 20°: visible (half-FOV ~37.6°) but not centred (tolerance 15% of width ~ ±13°).
    side = project_point(state((0, 0, 1)), np.array([4.0, 4.0 * math.tan(math.radians(20)), 1.0]), cam)
    assert side.in_view and not side.centred
    # The centring tolerance edge: 19.2 px = 13.0° at f = 83.1 px.
    for degrees, centred in ((12.0, True), (-12.0, True), (14.0, False), (-14.0, False)):
        p = np.array([4.0, 4.0 * math.tan(math.radians(degrees)), 1.0])
        assert project_point(state((0, 0, 1)), p, cam).centred is centred, degrees
    # A camera tilted down 10° (pitch_deg > 0) sees a level target above the image centre.
    down = project_point(state((0, 0, 1)), np.array([4.0, 0.0, 1.0]), Camera(pitch_deg=10.0))
    assert down.v == pytest.approx(cy - focal * math.tan(math.radians(10.0)))
    # The body pitching nose-down (positive pitch) also moves a level target up in the image.
    nose_down = project_point(state((0, 0, 1), pitch=math.radians(10.0)), np.array([4.0, 0.0, 1.0]), cam)
    assert nose_down.v == pytest.approx(down.v)
    # The lens offset counts: mounted 0.5 m forward, a target 1 m ahead is 0.5 m deep.
    assert project_point(state((0, 0, 1)), np.array([1.0, 0, 1.0]), Camera(mount_offset_m=(0.5, 0, 0))).depth_m \
        == pytest.approx(0.5)


# ---------------------------------------------------------------- fly to target

def run_states(task, states, crashed=False):
    task.begin(states[0])
    status = None
    for s in states[1:]:
        status = task.update(s, crashed, DT)
        if status.done:
            break
    return status


def test_fly_to_target_succeeds_only_after_holding_two_seconds():
    task = FlyToTarget(fly_spec(), Camera())
    hover = [state((4.0, 0.0, 1.0), t=k * DT) for k in range(0, 200)]
    status = run_states(task, hover)
    assert status.success and status.reason == "success"
    assert task.time_to_goal_s == pytest.approx(2.0, abs=DT + 1e-9)
    m = task.metrics()
    assert m["final_distance_m"] == pytest.approx(1.0) and m["success"] and not m["crashed"]


@pytest.mark.parametrize("position, yaw, velocity, why", [
    ((4.7, 0.0, 1.0), 0.0, (0, 0, 0), "too close (0.3 m)"),
    ((3.0, 0.0, 1.0), 0.0, (0, 0, 0), "too far (2 m)"),
    ((4.0, 0.0, 1.0), 0.5, (0, 0, 0), "not centred (29°)"),
    ((4.0, 0.0, 1.0), 0.0, (0.5, 0, 0), "moving at 0.5 m/s"),
])
def test_fly_to_target_fails_when_a_condition_is_broken(position, yaw, velocity, why):
    task = FlyToTarget(fly_spec(duration=3.0), Camera())
    status = run_states(task, [state(position, yaw, velocity, t=k * DT) for k in range(0, 200)])
    assert status.done and not status.success and status.reason == "timeout", why
    assert task.metrics()["duration_s"] == pytest.approx(3.0, abs=DT)


def test_hold_restarts_after_a_break():
    task = FlyToTarget(fly_spec(), Camera())
    states = [state((4.0, 0.0, 1.0) if k != 40 else (2.0, 0.0, 1.0), t=k * DT) for k in range(200)]
    run_states(task, states)
    assert task.time_to_goal_s == pytest.approx(40 * DT + 2.0, abs=DT + 1e-9)


def test_crash_and_leaving_the_arena_fail_the_episode():
    task = FlyToTarget(fly_spec(), Camera())
    status = run_states(task, [state((4.0, 0, 1.0), t=k * DT) for k in range(5)], crashed=True)
    assert status.done and not status.success and task.metrics()["crashed"]
    task = FlyToTarget(fly_spec(), Camera())
    status = run_states(task, [state((0, 0, 1.0)), state((0, 31.0, 1.0), t=DT)])
    assert status.reason == "left_arena" and task.metrics()["left_arena"]
    task = FlyToTarget(fly_spec(), Camera())
    assert run_states(task, [state((0, 0, 1.0)), state((0, 0, 9.0), t=DT)]).reason == "left_arena"


# ---------------------------------------------------------------- loop and chase

def test_target_loop_visits_in_order_and_counts():
    spec = sample_episode(load_scenario("train_target_loop"), 1)
    task = make_task(spec, Camera())
    assert isinstance(task, TargetLoop)
    task.begin(state(spec.start_position))
    t = 0.0
    # Visiting the second target first does not count.
    t += DT
    task.update(state(spec.targets[1], t=t), False, DT)
    assert task.visited == 0
    for goal in spec.targets:
        assert np.allclose(task.target_position(t), goal)
        t += DT
        status = task.update(state(np.array(goal) + [1.2, 0, 0], t=t), False, DT)
    assert status.success and task.metrics()["targets_visited"] == len(spec.targets)


def chase_run(offset_fn, spec):
    task = Chase(spec, Camera())
    task.begin(state(spec.start_position, yaw=spec.start_yaw_rad, t=0.0))
    k = 0
    while not task.status.done:
        k += 1
        t = k * DT
        target = task.target_position(t)
        vel = task.target_velocity(t)
        heading = math.atan2(vel[1], vel[0])
        pos = target - offset_fn(k) * np.array([math.cos(heading), math.sin(heading), 0.0])
        task.update(state(pos, yaw=heading, t=t), False, DT)
    return task


def test_chase_success_needs_ninety_percent_of_steps_in_band():
    from dataclasses import replace
    spec = replace(sample_episode(load_scenario("train_chase"), 2), duration_s=5.0)
    good = chase_run(lambda k: 1.5, spec)
    assert good.status.success and good.metrics()["time_in_band_frac"] == pytest.approx(1.0)
    # 8% of steps too far: still a success; 12%: a failure, stopped as soon as it cannot reach 90%.
    n = int(round(5.0 / DT))
    ok = chase_run(lambda k: 3.0 if k <= 0.08 * n else 1.5, spec)
    assert ok.status.success
    bad = chase_run(lambda k: 3.0 if k <= 0.12 * n else 1.5, spec)
    assert not bad.status.success and bad.status.reason == "lost_target" and bad.steps < n


def test_make_task_rejects_unknown_task():
    from dataclasses import replace
    with pytest.raises(ValueError, match="unknown task"):
        make_task(replace(fly_spec(), task="dance"), Camera())
