"""Camera model and ray-cast renderer: intrinsics, projection of known points, shapes, depth, lighting, effects."""
import math

import numpy as np
import pybullet as pb
import pytest

from liquid_control.simulation import CameraConfig, RayCastRenderer, intrinsics, project
from liquid_control.simulation.camera import camera_pose
from liquid_control.simulation.image_effects import ImageEffects, apply_pixel_effects
from liquid_control.simulation.world import GroundConfig, LightConfig, Obstacle, SceneConfig, SceneObject, SkyConfig

RED = (1.0, 0.0, 0.0)


def yaw_rotation(yaw):
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def plain_scene(*objects, **kwargs):
    return SceneConfig(ground=GroundConfig(colour=(0.5, 0.5, 0.5), texture="plain"),
                       sky=SkyConfig(colour=(0.5, 0.5, 0.5), horizon_colour=(0.5, 0.5, 0.5)),
                       target=None, distractors=objects, **kwargs)


def red_centroid(image):
    rgb = image.astype(int)  # red-dominant, however it is shaded (the background is grey)
    mask = (rgb[..., 0] > 40) & (rgb[..., 0] > 3 * rgb[..., 1]) & (rgb[..., 0] > 3 * rgb[..., 2])
    assert mask.sum() > 3, "the red object is not in the image"
    v, u = np.nonzero(mask)
    return u.mean(), v.mean(), mask


def test_intrinsics_and_aspect_ratio():
    cfg = CameraConfig(width=128, height=96, fov_deg=60.0)
    k = intrinsics(cfg)
    f = 48.0 / math.tan(math.radians(30.0))
    np.testing.assert_allclose(k, [[f, 0, 63.5], [0, f, 47.5], [0, 0, 1]])
    wide = intrinsics(CameraConfig(width=256, height=144, fov_deg=60.0))
    assert wide[0, 0] == wide[1, 1]  # square pixels: horizontal FOV follows the aspect ratio
    assert 2 * math.degrees(math.atan(128 / wide[0, 0])) == pytest.approx(91.5, abs=0.5)
    image, depth = RayCastRenderer(CameraConfig(width=64, height=48), SceneConfig()).render((0, 0, 1), np.eye(3))
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and depth is None


@pytest.mark.parametrize("shape", ["sphere", "box", "cylinder"])
def test_known_world_point_lands_on_its_pixel(shape):
    cfg = CameraConfig(width=160, height=120, fov_deg=70.0, pitch_deg=15.0, mount_offset_m=(0.05, 0.02, -0.03))
    position, rotation = np.array([1.0, -0.5, 1.5]), yaw_rotation(0.3)
    # Place the object 4 m along a ray that is off the image centre, so pitch, yaw and offsets all matter.
    lens, world_from_optical = camera_pose(cfg, position, rotation)
    k = intrinsics(cfg)
    pixel = np.array([110.0, 40.0])
    ray = world_from_optical @ np.linalg.solve(k, [pixel[0], pixel[1], 1.0])
    point = lens + 4.0 * ray / np.linalg.norm(ray)  # 4 m from the lens
    u, v, z = project(cfg, position, rotation, point)
    np.testing.assert_allclose([u, v], pixel, atol=1e-9)
    item = SceneObject(shape, RED, 0.3, tuple(point))
    image, _ = RayCastRenderer(cfg, plain_scene(item)).render(position, rotation)
    cu, cv, _ = red_centroid(image)
    # A box/cylinder seen off-axis has a slightly asymmetric silhouette; a sphere's is nearly centred.
    assert math.hypot(cu - u, cv - v) < (0.8 if shape == "sphere" else 1.5)


def test_renderer_agrees_with_pybullet_tinyrenderer():
    """Independent check of the projection: PyBullet's own renderer, set up from our intrinsics."""
    cfg = CameraConfig(width=96, height=72, fov_deg=60.0, pitch_deg=10.0)
    position, rotation = np.array([0.0, 0.0, 1.2]), yaw_rotation(-0.2)
    centre = (5.0, -0.3, 1.5)
    ours, _ = RayCastRenderer(cfg, plain_scene(SceneObject("sphere", RED, 0.6, centre))).render(position, rotation)
    client = pb.connect(pb.DIRECT)
    try:
        visual = pb.createVisualShape(pb.GEOM_SPHERE, radius=0.3, rgbaColor=(1, 0, 0, 1), physicsClientId=client)
        pb.createMultiBody(0, baseVisualShapeIndex=visual, basePosition=centre, physicsClientId=client)
        lens, world_from_optical = camera_pose(cfg, position, rotation)
        forward, down = world_from_optical[:, 2], world_from_optical[:, 1]
        view = pb.computeViewMatrix(lens, lens + forward, -down)
        proj = pb.computeProjectionMatrixFOV(cfg.fov_deg, cfg.width / cfg.height, 0.05, 100.0)
        _, _, rgba, _, _ = pb.getCameraImage(cfg.width, cfg.height, view, proj, renderer=pb.ER_TINY_RENDERER,
                                             physicsClientId=client)
    finally:
        pb.disconnect(client)
    theirs = np.asarray(rgba, np.uint8).reshape(cfg.height, cfg.width, 4)[..., :3]
    ou, ov, our_mask = red_centroid(ours)
    tu, tv, their_mask = red_centroid(theirs)
    assert math.hypot(ou - tu, ov - tv) < 1.0
    assert our_mask.sum() == pytest.approx(their_mask.sum(), rel=0.15)


def test_depth_image_measures_distance_along_the_optical_axis():
    cfg = CameraConfig(width=64, height=48, depth=True)
    image, depth = RayCastRenderer(cfg, plain_scene(SceneObject("box", RED, 1.0, (6.0, 0.0, 1.0)))).render(
        (0.0, 0.0, 1.0), np.eye(3))
    assert depth.dtype == np.float32 and depth.shape == (48, 64)
    lens_x = cfg.mount_offset_m[0]
    assert depth[23:25, 31:33] == pytest.approx(5.5 - lens_x, abs=1e-4)  # front face of the box
    # Ground straight ahead below the horizon: z-depth = height / tan(angle below the axis).
    k = intrinsics(cfg)
    row = 47
    angle = math.atan((row - k[1, 2]) / k[1, 1])
    assert depth[row, 0] == pytest.approx(1.0 / math.tan(angle), rel=1e-3)
    assert np.isinf(depth[0, 0])  # sky


def test_sky_ground_texture_and_horizon():
    scene = SceneConfig(ground=GroundConfig(colour=(0.2, 0.6, 0.2), colour2=(0.6, 0.2, 0.2), texture="checker",
                                            texture_scale_m=0.5),
                        sky=SkyConfig(colour=(0.0, 0.0, 1.0), horizon_colour=(1.0, 1.0, 1.0)), target=None,
                        light=LightConfig(direction=(0, 0, -1), strength=0.6, ambient=0.4))
    cfg = CameraConfig(width=128, height=96)
    image, _ = RayCastRenderer(cfg, scene).render((0.0, 0.0, 1.0), np.eye(3))
    top, bottom = image[:40].astype(int), image[60:].astype(int)
    assert (top[..., 2] >= top[..., 0]).all()  # sky: blue dominates, bluer towards the zenith
    assert image[0, 64, 0] < image[45, 64, 0]
    # Both checker colours (lit straight from above: shade = 1) appear below the horizon.
    greenish = ((bottom[..., 1] > 130) & (bottom[..., 0] < 80)).mean()
    reddish = ((bottom[..., 0] > 130) & (bottom[..., 1] < 80)).mean()
    assert greenish > 0.2 and reddish > 0.2
    noise, _ = RayCastRenderer(cfg, SceneConfig(ground=GroundConfig(texture="noise"), target=None)).render(
        (0.0, 0.0, 1.0), np.eye(3))
    assert noise[60:].std() > 2.0 and len(np.unique(noise[60:].reshape(-1, 3), axis=0)) > 20


def test_lighting_direction_and_strength():
    sphere = SceneObject("sphere", (0.8, 0.8, 0.8), 1.0, (4.0, 0.0, 1.0))
    cfg = CameraConfig(width=96, height=72)

    def render(light):
        scene = SceneConfig(ground=GroundConfig(texture="plain"), target=None, distractors=(sphere,), light=light)
        return RayCastRenderer(cfg, scene).render((0.0, 0.0, 1.0), np.eye(3))[0].astype(int)

    from_left = render(LightConfig(direction=(0.0, -1.0, 0.0), strength=0.6, ambient=0.3))
    u, v = 47, 35  # sphere centre
    left, right = from_left[v, u - 6].sum(), from_left[v, u + 6].sum()
    assert left > right + 60  # the side facing the light is brighter
    dim = render(LightConfig(direction=(0.0, -1.0, 0.0), strength=0.2, ambient=0.1))
    assert dim[v, u - 6].sum() < left - 100


def test_shadows_darken_the_ground_under_an_object():
    box = SceneObject("box", (0.9, 0.9, 0.9), (1.0, 1.0, 0.2), (4.0, 0.0, 1.5))
    scene = SceneConfig(ground=GroundConfig(texture="plain"), target=None, distractors=(box,),
                        light=LightConfig(direction=(0.0, 0.0, -1.0)))
    position, rotation = (0.0, 0.0, 3.0), np.eye(3)
    tilted = CameraConfig(width=96, height=72, pitch_deg=40.0)
    plain, _ = RayCastRenderer(tilted, scene).render(position, rotation)
    shadowed, _ = RayCastRenderer(CameraConfig(width=96, height=72, pitch_deg=40.0, shadows=True), scene).render(
        position, rotation)
    u, v, _ = project(tilted, position, rotation, (4.0, 0.0, 0.0))  # ground right under the box
    u, v = int(round(u)), int(round(v))
    assert shadowed[v, u].sum() < 0.8 * plain[v, u].sum()
    far_u, far_v, _ = project(tilted, position, rotation, (4.0, 2.5, 0.0))  # ground in the open
    assert shadowed[int(far_v), int(far_u)].sum() == plain[int(far_v), int(far_u)].sum()


def test_obstacles_render_as_trunk_and_crown():
    tree = Obstacle("tree", (5.0, 0.0), height_m=4.0, radius_m=0.2, crown_radius_m=1.0)
    scene = SceneConfig(target=None, obstacles=(tree,))
    cfg = CameraConfig(width=128, height=96, fov_deg=80.0)
    image, _ = RayCastRenderer(cfg, scene).render((0.0, 0.0, 1.5), np.eye(3))
    trunk_uv = project(cfg, (0.0, 0.0, 1.5), np.eye(3), (4.8, 0.0, 1.0))
    crown_uv = project(cfg, (0.0, 0.0, 1.5), np.eye(3), (4.0, 0.0, 3.0))
    trunk = image[int(trunk_uv[1]), int(trunk_uv[0])].astype(int)
    crown = image[int(crown_uv[1]), int(crown_uv[0])].astype(int)
    assert trunk[0] > trunk[2] and trunk[0] > trunk[1]  # brown
    assert crown[1] > crown[0] and crown[1] > crown[2]  # green


def test_pixel_effects():
    rng = np.random.default_rng(0)
    flat = np.full((60, 80, 3), 100, np.uint8)
    noisy = apply_pixel_effects(flat, ImageEffects(noise_std=8.0), rng)
    assert noisy.astype(float).std() == pytest.approx(8.0, rel=0.1)
    brighter = apply_pixel_effects(flat, ImageEffects(exposure_gain=1.5), rng)
    assert (brighter == 150).all()
    edge = np.zeros((40, 40, 3), np.uint8)
    edge[:, 20:] = 255
    blurred = apply_pixel_effects(edge, ImageEffects(blur_px=2.0), rng)
    assert 20 < blurred[10, 19, 0] < 235 and blurred[10, 0, 0] == 0
    assert apply_pixel_effects(flat, ImageEffects(), rng) is flat  # no effects: untouched, no copy


@pytest.mark.parametrize("bad, match", [
    (dict(width=0), "width and height"), (dict(fov_deg=0.0), "fov_deg"), (dict(pitch_deg=120.0), "pitch_deg"),
    (dict(mount_offset_m=(0.0, 0.0)), "mount_offset_m"), (dict(rate_hz=0.0), "rate_hz"),
])
def test_bad_camera_config_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        CameraConfig(**bad)


def test_bad_scene_config_is_named():
    with pytest.raises(ValueError, match="shape must be one of"):
        SceneObject("cone")
    with pytest.raises(ValueError, match="colour"):
        SceneObject("sphere", colour=(2.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="ground texture"):
        GroundConfig(texture="marble")
    with pytest.raises(ValueError, match="distractors must hold SceneObject"):
        SceneConfig(distractors=[{"shape": "box"}])
    with pytest.raises(ValueError, match="frame_drop_prob"):
        ImageEffects(frame_drop_prob=1.5)


def test_mount_transform_is_the_rep103_optical_frame_at_the_lens():
    """base_link -> camera optical frame: z along the optical axis, x right, y down (REP-103)."""
    from liquid_control.simulation.camera import body_from_camera, mount_transform, quaternion_from_rotation
    from liquid_control.simulation.quadrotor import rotation_from_quaternion

    translation, q = mount_transform(CameraConfig())
    np.testing.assert_allclose(translation, CameraConfig().mount_offset_m)
    np.testing.assert_allclose(q, [-0.5, 0.5, -0.5, 0.5], atol=1e-12)  # the standard optical rotation
    for pitch in (-30.0, 0.0, 25.0, 90.0):
        cfg = CameraConfig(pitch_deg=pitch, mount_offset_m=(0.05, -0.01, 0.02))
        translation, q = mount_transform(cfg)
        body_from_optical = np.array(rotation_from_quaternion(*q)).reshape(3, 3)
        # optical z (forward) is the camera's viewing axis in the body; optical x (right) is body -y
        np.testing.assert_allclose(body_from_optical @ [0, 0, 1], body_from_camera(cfg) @ [1, 0, 0], atol=1e-12)
        np.testing.assert_allclose(body_from_optical @ [1, 0, 0], [0, -1, 0], atol=1e-12)
        np.testing.assert_allclose(translation, cfg.mount_offset_m)
    turn = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]])  # 180 deg about z: the hard case
    np.testing.assert_allclose(quaternion_from_rotation(turn), [0, 0, 1, 0], atol=1e-12)
