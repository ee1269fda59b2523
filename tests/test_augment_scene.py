"""Scene augmentation (recolouring by segmentation, ground texture, blur, cutout, flips) and aux targets."""
import math

import numpy as np
import pytest
import torch

from liquid_control.learning.augment import (GROUND, OTHER, SKY, TARGET, AugmentConfig, HideDraw, SceneDraw,
                                             apply_scene, flip_labels, hide_target, sample_scene)
from liquid_control.learning.dataset import EpisodeData, read_shard, write_shard
from liquid_control.learning.sampler import (AUX_SIZE, MOTION_SIZE, StreamSampler, aux_loss, aux_targets, motion_loss,
                                             target_motion)
from liquid_control.simulation import CameraConfig, RayCastRenderer
from liquid_control.simulation.world import SceneConfig, SceneObject

RED = np.array([220, 20, 20], np.uint8)


def striped_sequence(frames=3, h=12, w=16):
    """Sky on top, ground below, a red target square and a blue 'other' square; with its classes."""
    images = np.zeros((frames, h, w, 3), np.uint8)
    seg = np.zeros((frames, h, w), np.uint8)
    images[:, : h // 2] = (120, 160, 220)
    images[:, h // 2:] = (90, 130, 70)
    images[:, h // 2:, ::2] = (70, 110, 50)  # ground texture: stripes
    seg[:, h // 2:] = GROUND
    images[:, 4:7, 2:5], seg[:, 4:7, 2:5] = RED, TARGET
    images[:, 4:7, 10:13], seg[:, 4:7, 10:13] = (20, 20, 200), OTHER
    return images, seg


def test_renderer_segmentation_marks_sky_ground_target_and_others_without_changing_pixels():
    target = SceneObject("sphere", (0.9, 0.1, 0.1), 0.5, (4.0, 0.0, 1.0), collides=False)
    other = SceneObject("box", (0.1, 0.3, 0.9), 0.5, (4.0, 1.0, 1.0))
    scene = SceneConfig(target=target, distractors=(other,))
    plain, _ = RayCastRenderer(CameraConfig(width=64, height=48), scene).render((0, 0, 1), np.eye(3))
    renderer = RayCastRenderer(CameraConfig(width=64, height=48, segmentation=True), scene)
    image, _ = renderer.render((0, 0, 1), np.eye(3))
    seg = renderer.last_segmentation
    np.testing.assert_array_equal(image, plain)
    assert seg.shape == (48, 64) and seg.dtype == np.uint8
    assert seg[0, 0] == SKY and seg[-1, 0] == GROUND
    target_pixels, other_pixels = seg == TARGET, seg == OTHER
    assert target_pixels.sum() > 10 and other_pixels.sum() > 10
    # The target is where the red is, the other object left of it in the image (it is at +y: left).
    assert image[target_pixels][:, 0].mean() > 2 * image[target_pixels][:, 1].mean()
    assert np.nonzero(other_pixels)[1].mean() < np.nonzero(target_pixels)[1].mean()
    assert RayCastRenderer(CameraConfig(width=64, height=48), scene).last_segmentation is None


def test_recolouring_changes_background_keeps_target_and_texture():
    images, seg = striped_sequence()
    config = AugmentConfig(recolour_prob=1.0)
    draw = sample_scene(config, np.random.default_rng(0), 12, 16)
    assert set(draw.recolour) == {SKY, GROUND, OTHER}
    out = apply_scene(images, seg, draw, config, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[seg == TARGET], images[seg == TARGET])
    for cls in (SKY, GROUND, OTHER):
        assert np.abs(out[seg == cls].astype(int) - images[seg == cls]).max() > 10, cls
    # Texture kept: the ground stripes still differ in brightness, the same way round.
    ground = out[0, 8].astype(float).mean(axis=-1)
    assert (ground[::2].mean() - ground[1::2].mean()) * (70 - 90) > 0
    # No recoloured class becomes a saturated red (red is the target's colour).
    for colour, _ in draw.recolour.values():
        assert not (colour[0] > 0.45 * 255 and colour[0] > 1.6 * colour[1] and colour[0] > 1.6 * colour[2])


def test_recolour_classes_limits_recolouring_to_the_named_classes():
    images, seg = striped_sequence()
    config = AugmentConfig(recolour_prob=1.0, recolour_classes=("sky", "ground"))
    draw = sample_scene(config, np.random.default_rng(0), 12, 16)
    assert set(draw.recolour) == {SKY, GROUND}
    out = apply_scene(images, seg, draw, config, np.random.default_rng(0))
    np.testing.assert_array_equal(out[seg == OTHER], images[seg == OTHER])
    assert np.abs(out[seg == SKY].astype(int) - images[seg == SKY]).max() > 10
    # The default (all three) draws exactly as before the option existed: the same colours from the same seed.
    everything = sample_scene(AugmentConfig(recolour_prob=1.0), np.random.default_rng(0), 12, 16)
    assert list(everything.recolour) == [SKY, GROUND, OTHER]


def test_scene_augmentation_is_off_by_default_and_seeded():
    assert not AugmentConfig().scene_changes
    images, seg = striped_sequence()
    config = AugmentConfig(recolour_prob=0.5, ground_texture_max=30.0, blur_sigma_max=1.0, cutout_prob=0.5,
                           flip_prob=0.5)
    runs = []
    for _ in range(2):
        rng = np.random.default_rng(7)
        runs.append(apply_scene(images, seg, sample_scene(config, rng, 12, 16), config, rng))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_hue_margin_keeps_reds_out_and_lets_orange_and_pink_in_as_hard_negatives():
    from liquid_control.learning.augment import target_like
    reds = [(0.90, 0.10, 0.10), (0.80, 0.05, 0.15), (0.95, 0.25, 0.10), (0.30, 0.05, 0.05)]  # the last: in dim light
    others = [(0.95, 0.55, 0.10), (0.85, 0.30, 0.60), (0.10, 0.30, 0.90), (0.50, 0.42, 0.42), (0.0, 0.0, 0.0)]
    for colour in reds:
        assert target_like(np.array(colour), 15.0), colour
    for colour in others:
        assert not target_like(np.array(colour), 15.0), colour
    assert target_like(np.array((0.95, 0.55, 0.10)), 0.0)  # the default rule also keeps orange out
    config = AugmentConfig(recolour_prob=1.0, recolour_hue_margin_deg=15.0)
    rng = np.random.default_rng(0)
    drawn = [c / 255.0 for _ in range(300) for c, _ in sample_scene(config, rng, 12, 16).recolour.values()]
    assert not any(target_like(c, 15.0) for c in drawn)
    assert any(target_like(c, 0.0) for c in drawn)  # colours the default rule never draws (oranges, pinks)


def test_shade_darkens_every_lit_surface_and_leaves_the_sky():
    images, seg = striped_sequence()
    config = AugmentConfig(shade=(0.25, 0.25))
    assert config.scene_changes
    draw = sample_scene(config, np.random.default_rng(0), 12, 16)
    assert draw.shade == pytest.approx(0.25)
    out = apply_scene(images, seg, draw, config, np.random.default_rng(0))
    np.testing.assert_array_equal(out[seg == SKY], images[seg == SKY])
    for cls in (GROUND, TARGET, OTHER):
        np.testing.assert_allclose(out[seg == cls], np.rint(images[seg == cls] * 0.25), atol=1)
    # The red target stays the reddest thing, only darker.
    target = out[seg == TARGET].astype(int)
    assert (target[:, 0] > 2 * target[:, 1]).all()
    # Off by default, and off draws nothing: the random stream of older recipes is unchanged.
    rngs = np.random.default_rng(5), np.random.default_rng(5)
    sample_scene(AugmentConfig(recolour_prob=0.5), rngs[0], 12, 16)
    sample_scene(AugmentConfig(recolour_prob=0.5, shade=(1.0, 1.0)), rngs[1], 12, 16)
    assert rngs[0].random() == rngs[1].random()


def test_flip_mirrors_image_and_negates_lateral_and_yaw_labels():
    images, seg = striped_sequence()
    draw = SceneDraw(recolour={}, ground_texture=None, blur_sigma=0.0, flip=True)
    out = apply_scene(images, seg, draw, AugmentConfig(), np.random.default_rng(0))
    np.testing.assert_array_equal(out, images[:, :, ::-1])
    np.testing.assert_allclose(flip_labels(np.array([[0.5, 0.2, -0.1, 0.3]])), [[0.5, -0.2, -0.1, -0.3]], rtol=1e-6)


def test_cutout_never_covers_the_target():
    images, seg = striped_sequence(frames=40)
    config = AugmentConfig(cutout_prob=1.0, cutout_max_frac=1.0)
    draw = SceneDraw(recolour={}, ground_texture=None, blur_sigma=0.0, flip=False)
    out = apply_scene(images, seg, draw, config, np.random.default_rng(3))
    np.testing.assert_array_equal(out[seg == TARGET], images[seg == TARGET])
    assert (out != images).any(axis=-1).sum() > 40  # rectangles were drawn


@pytest.mark.parametrize("bad", [{"recolour_prob": 1.5}, {"flip_prob": -0.1}, {"blur_sigma_max": -1.0},
                                 {"cutout_max_frac": 0.0}, {"ground_texture_max": float("nan")},
                                 {"hide_prob": 1.5}, {"hide_duration_s": (0.0, 0.5)},
                                 {"recolour_classes": ("sky", "target")}, {"recolour_classes": ()},
                                 {"shade": (0.8, 0.5)}, {"shade": (-0.1, 1.0)}, {"recolour_hue_margin_deg": 120.0}])
def test_bad_scene_augmentation_settings_are_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        AugmentConfig(**bad)


def test_aux_targets_known_answers():
    n = 4
    episode = EpisodeData(images=np.zeros((n, 4, 4, 3), np.uint8), capture_times_s=np.arange(n) * 0.1,
                          labels=np.zeros((n, 4), np.float32),
                          positions=np.zeros((n, 3), np.float32),
                          yaws=np.array([0.0, math.pi / 2, 0.0, 0.0], np.float32),
                          targets=np.array([[3, 0, 0], [3, 0, 0], [-3, 0, 0], [3, 3, 3]], np.float32))
    aux = aux_targets(episode, np.arange(n))
    assert aux.shape == (n, AUX_SIZE)
    np.testing.assert_allclose(aux[0], [0.0, 0.0, 0.0, 1.0], atol=1e-6)  # dead ahead, 3 m, in view
    assert aux[1, 0] == pytest.approx(-math.pi / 2 / 0.66, rel=1e-5) and aux[1, 3] == 0.0  # to the right
    assert aux[2, 3] == 0.0  # behind
    assert aux[3, 0] == pytest.approx(math.pi / 4 / 0.66, rel=1e-5) and aux[3, 2] == pytest.approx(
        math.log(math.sqrt(27) / 3), rel=1e-5)
    no_truth = EpisodeData(images=episode.images, capture_times_s=episode.capture_times_s, labels=episode.labels)
    assert np.isnan(aux_targets(no_truth, np.arange(n))).all()


def test_target_motion_known_answers():
    n = 6
    t = np.array([0.0, 0.1, 0.2, 0.4, 0.5, 0.6])  # one dropped frame: uneven spacing
    targets = np.stack([1.0 * t, 2.0 * t, np.zeros(n)], axis=1)  # (1, 2, 0) m/s in the world
    targets[5] += [5.0, 0.0, 0.0]  # the next target of a loop: a jump, not motion
    episode = EpisodeData(images=np.zeros((n, 4, 4, 3), np.uint8), capture_times_s=t,
                          labels=np.zeros((n, 4), np.float32), positions=np.zeros((n, 3), np.float32),
                          yaws=np.full(n, math.pi / 2, np.float32), targets=targets.astype(np.float32))
    motion = target_motion(episode, np.arange(n))
    assert motion.shape == (n, MOTION_SIZE)
    # Heading north (yaw 90 deg): world +y is forward, world +x is to the right (-y in FLU).
    np.testing.assert_allclose(motion[:4], np.tile([2.0, -1.0, 0.0], (4, 1)), atol=1e-5)
    assert np.isnan(motion[4:]).all()  # both differences that span the jump
    no_truth = EpisodeData(images=episode.images, capture_times_s=t, labels=episode.labels)
    assert np.isnan(target_motion(no_truth, np.arange(n))).all()


def test_motion_loss_scores_known_frames_only():
    targets = torch.tensor([[[1.0, 0.0, 0.0], [float("nan")] * 3, [0.0, 2.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    exact = torch.tensor([[[1.0, 0.0, 0.0], [7.0, 7.0, 7.0], [9.0, 9.0, 9.0]]])
    assert float(motion_loss(exact, targets, mask)) == 0.0  # NaN and padded frames do not count
    assert float(motion_loss(exact + torch.tensor([0.0, 0.0, 3.0]), targets, mask)) == pytest.approx(3.0)
    assert float(motion_loss(exact, torch.full_like(targets, float("nan")), mask)) == 0.0


def test_aux_loss_ignores_unknown_and_out_of_view_geometry():
    targets = torch.tensor([[[0.5, 0.1, 0.2, 1.0], [9.0, 9.0, 9.0, 0.0], [float("nan")] * 4]])
    mask = torch.ones(1, 3)
    exact = torch.tensor([[[0.5, 0.1, 0.2, 20.0], [0.0, 0.0, 0.0, -20.0], [0.0, 0.0, 0.0, 0.0]]])
    assert float(aux_loss(exact, targets, mask)) < 1e-6
    wrong = exact.clone()
    wrong[0, 0, 0] = 1.5
    assert float(aux_loss(wrong, targets, mask)) > 0.3
    assert float(aux_loss(exact, torch.full_like(targets, float("nan")), mask)) == 0.0


def test_sampler_flips_labels_and_aux_with_the_image(tmp_path):
    n, h, w = 40, 12, 16
    images, seg = striped_sequence(frames=n, h=h, w=w)
    labels = np.tile(np.array([0.4, 0.3, 0.0, 0.5], np.float32), (n, 1))
    episode = EpisodeData(images=images, capture_times_s=np.arange(n) / 30.0, labels=labels, segmentation=seg,
                          positions=np.zeros((n, 3), np.float32), yaws=np.zeros(n, np.float32),
                          targets=np.stack([np.full(n, 3.0), 1.0 + 0.5 * np.arange(n) / 30.0, np.zeros(n)],
                                           axis=1).astype(np.float32))  # moving left at 0.5 m/s
    write_shard(tmp_path / "x_000000.npz", episode)
    loaded = read_shard(tmp_path / "x_000000.npz")
    np.testing.assert_array_equal(loaded.segmentation, seg)
    config = AugmentConfig.none()
    sampler = StreamSampler([loaded], 8, 10, AugmentConfig(**{**config.__dict__, "flip_prob": 0.5}), 1 / 30.0,
                            0.0, np.random.default_rng(0))
    batch = sampler.next_batch()
    flipped = batch.labels[:, 0, 1] < 0
    assert flipped.any() and (~flipped).any()
    for i in range(8):
        sign = -1.0 if flipped[i] else 1.0
        np.testing.assert_allclose(batch.labels[i, 0], [0.4, 0.3 * sign, 0.0, 0.5 * sign])
        assert np.sign(batch.aux[i, 0, 0]) == sign
        np.testing.assert_allclose(batch.motion[i, :, 1], 0.5 * sign, rtol=1e-4)  # mirrored: moving right
        expected = images[0, :, ::-1] if flipped[i] else images[0]
        np.testing.assert_array_equal(batch.images[i, 0], expected)


def test_per_sequence_drop_probability_spreads_timespans():
    n = 400
    episode = EpisodeData(images=np.zeros((n, 4, 4, 3), np.uint8), capture_times_s=np.arange(n) / 30.0,
                          labels=np.zeros((n, 4), np.float32))
    base = AugmentConfig(time_jitter_s=0.0, frame_drop_prob=0.0)
    wide = AugmentConfig(time_jitter_s=0.0, frame_drop_prob=0.0, frame_drop_prob_max=0.8)
    spans = {}
    for name, config in (("base", base), ("wide", wide)):
        sampler = StreamSampler([episode], 16, 20, config, 1 / 30.0, 1.0, np.random.default_rng(1))
        batch = sampler.next_batch()
        spans[name] = batch.timespans[batch.mask > 0][:, 0]
    np.testing.assert_allclose(spans["base"][spans["base"] != 1.0], [])  # every frame kept
    assert spans["wide"].max() >= 4.0 and spans["wide"].mean() > 1.5
    with pytest.raises(ValueError, match="frame_drop_prob_max"):
        AugmentConfig(frame_drop_prob_max=0.99)


def _hide_episode(n=120, h=12, w=16):
    images, seg = striped_sequence(frames=n, h=h, w=w)
    return EpisodeData(images=images, capture_times_s=np.arange(n) / 30.0,
                       labels=np.tile(np.array([0.4, 0.3, 0.0, 0.5], np.float32), (n, 1)), segmentation=seg,
                       positions=np.zeros((n, 3), np.float32), yaws=np.zeros(n, np.float32),
                       targets=np.tile(np.array([3.0, 0.5, 0.0], np.float32), (n, 1)))


def test_hidden_target_box_covers_the_target_and_black_frames_are_black():
    images, seg = striped_sequence(frames=4)
    hidden = np.array([False, True, True, False])
    box = hide_target(images, seg, hidden, HideDraw(0.0, 1.0, black=False, grey=100.0))
    for k in range(4):
        target = box[k][seg[k] == TARGET]
        if hidden[k]:
            assert (target == 100).all() and not (box[k] == RED).all(axis=-1).any()
            np.testing.assert_array_equal(box[k, :, 10:], images[k, :, 10:])  # the rest of the scene is kept
        else:
            np.testing.assert_array_equal(box[k], images[k])
    black = hide_target(images, seg, hidden, HideDraw(0.0, 1.0, black=True, grey=100.0))
    assert not black[hidden].any() and (black[~hidden] == images[~hidden]).all()


def test_sampler_hides_the_target_in_gaps_that_span_chunks_and_keeps_the_labels():
    episode = _hide_episode()
    config = AugmentConfig(**{**AugmentConfig.none().__dict__, "hide_prob": 1.0, "hide_duration_s": (0.5, 0.9)})
    sampler = StreamSampler([episode], 4, 10, config, 1 / 30.0, 0.0, np.random.default_rng(3))
    hidden_runs = np.zeros((4, 0), bool)
    for _ in range(6):
        batch = sampler.next_batch()
        np.testing.assert_allclose(batch.labels[batch.mask > 0], np.tile([0.4, 0.3, 0.0, 0.5], (40, 1)))
        red = (batch.images == RED).all(axis=-1).any(axis=(2, 3))  # (B, T): target visible
        np.testing.assert_array_equal(np.isnan(batch.aux).any(axis=-1), ~red)  # aux unknown exactly when hidden
        hidden_runs = np.concatenate([hidden_runs, ~red], axis=1)
    complete = []
    for row in hidden_runs:  # 60 frames per stream; gaps that start and end inside them
        edges = np.flatnonzero(np.diff(row.astype(int))) + 1
        starts = [e for e in edges if row[e]]
        complete += [next(e for e in edges if e > s and not row[e]) - s for s in starts if any(
            e > s and not row[e] for e in edges)]
    # Every complete gap lasts 0.5-0.9 s of 30 Hz frames, also when it crosses a 10-frame chunk boundary.
    assert len(complete) >= 3 and all(14 <= n <= 28 for n in complete), complete
    assert any(n > 10 for n in complete)
    off = StreamSampler([episode], 4, 10, AugmentConfig.none(), 1 / 30.0, 0.0, np.random.default_rng(3))
    assert (off.next_batch().images == RED).all(axis=-1).any(axis=(2, 3)).all()
    with pytest.raises(ValueError, match="hide_duration_s"):
        AugmentConfig(hide_duration_s=(1.0, 0.5))
