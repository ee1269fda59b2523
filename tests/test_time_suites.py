"""Tasks where time matters: occlusion events (passing occluder, black frames) and a changing frame rate."""
import math
import textwrap
from dataclasses import replace

import numpy as np
import pytest

from liquid_control.simulation import CameraConfig, DroneWorld, ImageEffects, SceneConfig, SceneObject
from liquid_control.simulation.episode import EpisodeConfig, ExpertController, effects_from_spec, run_episode
from liquid_control.simulation.occlusion import MAX_PASS_S
from liquid_control.simulation.sampling import OCCLUSION_MIN_GAP_S, OcclusionEvent, sample_episode
from liquid_control.simulation.scenario import ScenarioError, load_scenario
from liquid_control.simulation.tasks import project_point

SMALL = CameraConfig(width=64, height=48)


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def red_pixels(image: np.ndarray) -> int:
    """Pixels of the red target (the test scenes hold nothing else red; the occluder is grey)."""
    rgb = image.astype(int)
    return int(((rgb[..., 0] > 80) & (rgb[..., 0] > 2 * rgb[..., 1]) & (rgb[..., 0] > 2 * rgb[..., 2])).sum())


def fly(spec, duration_s):
    """The expert flying `spec` with a small camera; frames kept (the expert ignores them, so two specs
    that differ only in occlusion fly the same trajectory)."""
    config = EpisodeConfig(camera=SMALL, keep_frames=True, duration_s=duration_s)
    return run_episode(spec, ExpertController(SMALL), config=config)


def plain_fly_spec(**changes):
    """A fly-to-target episode with a red target, no distractors, blur, drops or latency (plus `changes`)."""
    spec = sample_episode(load_scenario("train_fly_to_target"), 8)
    plain = dict(distractors=(), target_colour=(0.9, 0.1, 0.1), image_noise_std=0.0, blur_px=0.0,
                 frame_drop_prob=0.0, latency_mean_s=0.0, latency_jitter_s=0.0)
    return replace(spec, **{**plain, **changes})


# ---------------------------------------------------------------- scenario files and sampling

@pytest.mark.parametrize("body, key, fragment", [
    ("occlusion: {modes: [fog]}\n", "occlusion.modes", "unknown ['fog']"),
    ("occlusion: {count: 11}\n", "occlusion.count", "<= 10"),
    ("occlusion: {count: [1, 2.5]}\n", "occlusion.count", "whole numbers"),
    ("occlusion: {duration_s: [1.5, 0.3]}\n", "occlusion.duration_s", "low 1.5 > high 0.3"),
    ("occlusion: {occluder_colours: [[2, 0, 0]]}\n", "occlusion.occluder_colours", "0..1"),
    ("occlusion: {when: 3}\n", "occlusion.when", "unknown key"),
    ("timing: {rate_hz: [0.5, 60]}\n", "timing.rate_hz", "null (off)"),
    ("timing: {rate_hz: fast}\n", "timing.rate_hz", "[low, high]"),
    ("timing: {rate_change_s: 0}\n", "timing.rate_change_s", "out of range"),
])
def test_malformed_time_sections_name_file_key_and_allowed(tmp_path, body, key, fragment):
    path = write(tmp_path, "broken.yaml", "task: chase\n" + body)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert info.value.key == key and str(path) in str(info.value) and fragment in str(info.value)


def test_defaults_are_off_and_explicitly_off_samples_the_same_episode(tmp_path):
    for name in ("train_fly_to_target", "train_target_loop", "train_chase", "ood_timing_chase"):
        spec = sample_episode(load_scenario(name), 3)
        assert spec.occlusions == () and spec.camera_rate_schedule == ()
        effects = effects_from_spec(spec)
        assert effects.rate_schedule == () and effects.blackouts == ()
    # Same file name, so the same random stream: switching the options on changes only their own fields.
    shipped = load_scenario("train_chase")
    off = write(tmp_path, "train_chase.yaml", "extends: train_chase\nocclusion: {count: 0}\ntiming: {rate_hz: null}\n")
    on = tmp_path / "on" / "train_chase.yaml"
    on.parent.mkdir()
    on.write_text("extends: train_chase\nocclusion: {count: 2}\ntiming: {rate_hz: [8, 60]}\n")
    for seed in range(5):
        base = sample_episode(shipped, seed)
        assert sample_episode(load_scenario(off), seed) == base
        switched = sample_episode(load_scenario(on), seed)
        assert len(switched.occlusions) == 2 and switched.camera_rate_schedule
        assert replace(switched, occlusions=(), camera_rate_schedule=(), occluder_size_m=base.occluder_size_m,
                       occluder_colour=base.occluder_colour) == base


@pytest.mark.parametrize("name", ["occlusion_fly_to_target", "occlusion_target_loop", "occlusion_chase"])
def test_occlusion_events_are_seeded_in_range_ordered_and_apart(name):
    scenario = load_scenario(name)
    section = scenario.section("occlusion")
    seen_modes = set()
    for seed in range(30):
        spec = sample_episode(scenario, seed)
        assert spec == sample_episode(scenario, seed)
        events = spec.occlusions
        assert section["count"].low <= len(events) <= section["count"].high
        assert section["start_s"].low <= events[0].start_s <= section["start_s"].high
        for event in events:
            assert 0.3 <= event.duration_s <= 1.5 and event.side in (-1.0, 1.0)
            seen_modes.add(event.mode)
        for before, after in zip(events, events[1:]):
            assert after.start_s >= before.end_s + OCCLUSION_MIN_GAP_S - 1e-9
    assert seen_modes == {"occluder", "blackout"}
    assert sample_episode(scenario, 1).occlusions != sample_episode(scenario, 2).occlusions


def test_rate_schedule_is_seeded_covers_the_episode_and_stays_in_the_band():
    scenario = load_scenario("variable_rate_chase")
    rates = []
    for seed in range(20):
        schedule = sample_episode(scenario, seed).camera_rate_schedule
        assert schedule == sample_episode(scenario, seed).camera_rate_schedule
        starts = [start for start, _ in schedule]
        assert starts[0] == 0.0 and starts[-1] < scenario.duration_s
        assert all(1.0 - 1e-9 <= b - a <= 4.0 + 1e-9 for a, b in zip(starts, starts[1:]))
        rates += [rate for _, rate in schedule]
    assert 8.0 <= min(rates) < 12.0 and 45.0 < max(rates) <= 60.0
    # Log-uniform: about as many segments below the geometric middle (~22 Hz) as above it.
    assert 0.35 < np.mean(np.array(rates) < math.sqrt(8 * 60)) < 0.65


# ---------------------------------------------------------------- the world

def test_world_rate_schedule_sets_the_time_between_captures():
    effects = ImageEffects(rate_schedule=((0.0, 10.0), (1.0, 60.0), (2.0, 20.0)))
    with DroneWorld("cf2x", camera=CameraConfig(width=16, height=12), control_hz=60.0, effects=effects) as world:
        world.reset(SceneConfig(), seed=0)
        captures = []
        for _ in range(180):
            frame = world.render()
            if frame is not None:
                captures.append(frame.capture_time_s)
            world.step([0.0, 0.0, 0.0, 0.0])
    captures = np.array(captures)
    gaps = np.diff(captures)
    for low, high, rate in ((0.0, 0.95, 10.0), (1.05, 1.95, 60.0), (2.05, 2.9, 20.0)):
        inside = gaps[(captures[:-1] >= low) & (captures[1:] <= high)]
        assert len(inside) >= 5 and np.allclose(inside, 1.0 / rate, atol=1e-6), (rate, inside)


def test_bad_rate_schedule_and_blackouts_are_named():
    with pytest.raises(ValueError, match="rate_schedule"):
        ImageEffects(rate_schedule=((0.5, 10.0),))  # must start at 0
    with pytest.raises(ValueError, match="rate_schedule"):
        ImageEffects(rate_schedule=((0.0, 10.0), (1.0, 0.0)))
    with pytest.raises(ValueError, match="blackouts"):
        ImageEffects(blackouts=((2.0, 1.0),))


def test_only_non_colliding_objects_can_be_moved():
    scene = SceneConfig(distractors=(SceneObject("box", (0.1, 0.2, 0.9), 0.5, (4.0, 1.0, 0.5)),
                                     SceneObject("cylinder", (0.3, 0.3, 0.3), 0.5, (4.0, -1.0, 0.5), collides=False)))
    with DroneWorld("cf2x", camera=SMALL) as world:
        world.reset(scene, seed=0)
        world.set_object_position(2, (3.0, 0.0, 1.0))
        with pytest.raises(ValueError, match="collides"):
            world.set_object_position(1, (3.0, 0.0, 1.0))
        with pytest.raises(ValueError, match="out of range"):
            world.set_object_position(3, (3.0, 0.0, 1.0))


# ---------------------------------------------------------------- episodes: the target really disappears

def test_passing_occluder_hides_the_target_in_its_window_and_only_near_it():
    event = OcclusionEvent("occluder", start_s=1.0, duration_s=0.6, side=1.0)
    clear = fly(plain_fly_spec(), 3.6)
    hidden = fly(plain_fly_spec(occlusions=(event,)), 3.6)
    np.testing.assert_array_equal(clear.positions, hidden.positions)  # the expert flies from ground truth
    counted = 0
    for state_time, a, b in zip(clear.times_s, clear.frames, hidden.frames):
        if a is None:
            continue
        t = a.capture_time_s
        if event.start_s <= t <= event.end_s:
            assert red_pixels(a.image) > 0 and red_pixels(b.image) == 0, t
            counted += 1
        elif t < event.start_s - MAX_PASS_S or t > event.end_s + MAX_PASS_S:
            assert np.array_equal(a.image, b.image), t  # parked: not drawn anywhere
    assert counted >= 15  # 0.6 s at 30 Hz
    passing = [f for f in hidden.frames if f is not None and event.end_s < f.capture_time_s < event.end_s + 0.5]
    assert any(red_pixels(f.image) > 0 for f in passing)  # it moves on and the target comes back


def test_a_shipped_occlusion_episode_hides_its_target_for_the_whole_sampled_window():
    spec = sample_episode(load_scenario("occlusion_fly_to_target"), 3)
    (event,) = spec.occlusions
    assert event.mode == "occluder" and 1.3 < event.start_s < 1.4 and 1.0 < event.duration_s < 1.1
    result = run_episode(spec, ExpertController(), config=EpisodeConfig(keep_frames=True, duration_s=3.0))
    frames = [f for f in result.frames if f is not None]
    window = [f for f in frames if event.start_s <= f.capture_time_s <= event.end_s]
    assert len(window) >= 30 and all(red_pixels(f.image) == 0 for f in window)
    before = [f for f in frames if f.capture_time_s < event.start_s - 0.5]
    assert all(red_pixels(f.image) > 0 for f in before)


def test_occluder_in_a_chase_hides_the_moving_target_whenever_it_is_in_view():
    spec = sample_episode(load_scenario("occlusion_chase"), 5)
    event = OcclusionEvent("occluder", start_s=2.0, duration_s=1.2, side=-1.0)
    spec = replace(spec, distractors=(), target_colour=(0.9, 0.1, 0.1), occlusions=(event,))
    result = fly(spec, 4.0)
    in_window = 0
    for k, frame in enumerate(result.frames):
        if frame is not None and event.start_s <= frame.capture_time_s <= event.end_s:
            in_window += 1
            assert red_pixels(frame.image) == 0, frame.capture_time_s
    assert in_window >= 30
    before = [f for f in result.frames if f is not None and 1.0 < f.capture_time_s < 1.3]
    assert all(red_pixels(f.image) > 0 for f in before)


def test_blackout_frames_are_black_in_the_window_and_unchanged_elsewhere():
    event = OcclusionEvent("blackout", start_s=1.0, duration_s=0.5)
    clear = fly(plain_fly_spec(image_noise_std=3.0), 2.5)  # noise: the random stream must stay in step
    dark = fly(plain_fly_spec(image_noise_std=3.0, occlusions=(event,)), 2.5)
    black = 0
    for a, b in zip(clear.frames, dark.frames):
        if a is None:
            assert b is None
            continue
        if event.start_s <= a.capture_time_s <= event.end_s:
            assert not b.image.any() and a.image.any()
            black += 1
        else:
            assert np.array_equal(a.image, b.image)
    assert black == 15  # captures at 1.0, 1.033, ..., 1.467 s


def test_variable_rate_chase_delivers_irregular_real_capture_times():
    spec = sample_episode(load_scenario("variable_rate_chase"), 1)  # 18, 57, 13, 10 Hz in the first 8 s
    spec = replace(spec, frame_drop_prob=0.0, latency_mean_s=0.0, latency_jitter_s=0.0)
    config = EpisodeConfig(camera=CameraConfig(width=16, height=12), keep_frames=True, duration_s=8.0)
    result = run_episode(spec, ExpertController(config.camera), config=config)
    captures = np.array([f.capture_time_s for f in result.frames if f is not None])
    starts = np.array([start for start, _ in spec.camera_rate_schedule])
    rates = np.array([rate for _, rate in spec.camera_rate_schedule])
    gaps = np.diff(captures)
    control_period = 1.0 / config.control_hz
    for capture, gap in zip(captures[:-1], gaps):
        rate = rates[np.searchsorted(starts, capture + 1e-9) - 1]
        # Captures happen at control steps: the gap is the camera period rounded up to a step, or one step.
        expected = max(math.ceil(1.0 / rate / control_period - 1e-6) * control_period, control_period)
        assert abs(gap - expected) <= control_period + 1e-6, (capture, rate, gap)
    assert gaps.min() < 0.04 and gaps.max() > 0.09  # the time between frames really changes
    assert len(np.unique(np.round(gaps, 3))) >= 3


def test_blacked_out_frames_carry_no_scene_classes():
    """Training recolours by class: a black frame must say it shows nothing (SEGMENT_NONE), not sky."""
    from liquid_control.simulation.camera import SEGMENT_NONE, SEGMENT_TARGET

    event = OcclusionEvent("blackout", start_s=1.0, duration_s=0.5)
    camera = CameraConfig(width=64, height=48, segmentation=True)
    config = EpisodeConfig(camera=camera, keep_frames=True, duration_s=2.0)
    result = run_episode(plain_fly_spec(occlusions=(event,)), ExpertController(camera), config=config)
    inside = outside = 0
    for frame in (f for f in result.frames if f is not None):
        if event.start_s <= frame.capture_time_s <= event.end_s:
            assert (frame.segmentation == SEGMENT_NONE).all()
            inside += 1
        else:
            assert (frame.segmentation != SEGMENT_NONE).all() and (frame.segmentation == SEGMENT_TARGET).any()
            outside += 1
    assert inside == 15 and outside > 20
