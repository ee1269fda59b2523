"""Forward camera fixed to the body, and a vectorised numpy ray-caster for our scene primitives.

Why a ray-caster and not PyBullet's getCameraImage: the scenes are a textured ground
plane, a sky gradient and a few spheres/boxes/cylinders, which numpy intersects
analytically; only the pixels inside each object's projected bounding box are
tested. That is several times faster than TinyRenderer at these resolutions (see
docs/BENCHMARKS.md, "Simulation speed") and gives exact pinhole intrinsics.

Conventions: the camera looks along body +x tilted down by pitch_deg (rotation
about body +y, FLU), sits at mount_offset_m (body FLU). Intrinsics follow OpenCV /
ROS CameraInfo: pixel (u, v) has its centre at integer coordinates, u to the
right, v down, so a camera-optical point (X right, Y down, Z forward) projects to
u = fx X/Z + cx, v = fy Y/Z + cy with cx = (W-1)/2, cy = (H-1)/2, fx = fy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from liquid_control.simulation.world import SceneConfig, SceneObject

NEAR_M = 0.01  # nothing closer than this to the lens is drawn


@dataclass(frozen=True)
class CameraConfig:
    """width/height in pixels; fov_deg is the *vertical* field of view; pitch_deg > 0 tilts the camera down;
    mount_offset_m is the lens position in the body frame (FLU, m); rate_hz is the frame rate;
    depth adds a float32 z-depth image (m, inf for sky); shadows casts object shadows on the ground."""

    width: int = 128
    height: int = 96
    fov_deg: float = 60.0
    pitch_deg: float = 0.0
    mount_offset_m: tuple[float, float, float] = (0.03, 0.0, 0.0)
    rate_hz: float = 30.0
    depth: bool = False
    shadows: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and isinstance(self.height, int) and self.width > 0 and self.height > 0):
            raise ValueError(f"camera width and height must be positive integers, got {self.width}x{self.height}")
        if not 1.0 <= self.fov_deg <= 170.0:
            raise ValueError(f"camera fov_deg (vertical) must be in [1, 170], got {self.fov_deg}")
        if not -90.0 <= self.pitch_deg <= 90.0:
            raise ValueError(f"camera pitch_deg must be in [-90, 90], got {self.pitch_deg}")
        offset = tuple(float(v) for v in self.mount_offset_m)
        if len(offset) != 3 or not all(math.isfinite(v) for v in offset):
            raise ValueError(f"camera mount_offset_m must be 3 finite numbers, got {self.mount_offset_m!r}")
        object.__setattr__(self, "mount_offset_m", offset)
        if not self.rate_hz > 0:
            raise ValueError(f"camera rate_hz must be positive, got {self.rate_hz}")


def intrinsics(cfg: CameraConfig) -> np.ndarray:
    """3x3 pinhole matrix K of the rendered image (square pixels, centred principal point)."""
    f = (cfg.height / 2.0) / math.tan(math.radians(cfg.fov_deg) / 2.0)
    return np.array([[f, 0.0, (cfg.width - 1) / 2.0], [0.0, f, (cfg.height - 1) / 2.0], [0.0, 0.0, 1.0]])


def body_from_camera(cfg: CameraConfig) -> np.ndarray:
    """Rotation taking camera-FLU vectors (x along the optical axis) to body FLU."""
    pitch = math.radians(cfg.pitch_deg)
    c, s = math.cos(pitch), math.sin(pitch)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


# Camera optical (x right, y down, z forward) -> camera FLU.
FLU_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_pose(cfg: CameraConfig, position, rotation) -> tuple[np.ndarray, np.ndarray]:
    """World position of the lens and world_from_optical rotation for a body pose (position, world_from_body)."""
    rotation = np.asarray(rotation, dtype=float).reshape(3, 3)
    lens = np.asarray(position, dtype=float) + rotation @ np.asarray(cfg.mount_offset_m)
    return lens, rotation @ body_from_camera(cfg) @ FLU_FROM_OPTICAL


def project(cfg: CameraConfig, position, rotation, point_world) -> tuple[float, float, float]:
    """Pixel (u, v) and optical depth Z (m) of a world point seen from a body pose."""
    lens, world_from_optical = camera_pose(cfg, position, rotation)
    p = world_from_optical.T @ (np.asarray(point_world, dtype=float) - lens)
    uvw = intrinsics(cfg) @ p
    return uvw[0] / uvw[2], uvw[1] / uvw[2], p[2]


def _value_noise_tile(seed: int, size: int = 256, cells: int = 16) -> np.ndarray:
    """Smooth tileable noise in [0, 1], size x size, with `cells` blobs across (two octaves)."""
    rng = np.random.default_rng(seed)
    tile = np.zeros((size, size), np.float32)
    for octave, weight in ((cells, 0.65), (cells * 4, 0.35)):
        grid = rng.random((octave, octave)).astype(np.float32)
        # Wrap the grid so the interpolated tile repeats seamlessly.
        wrapped = np.pad(grid, ((0, 1), (0, 1)), mode="wrap")
        up = cv2.resize(wrapped, (size + size // octave, size + size // octave), interpolation=cv2.INTER_LINEAR)
        tile += weight * up[:size, :size]
    return tile


class RayCastRenderer:
    """Renders a SceneConfig from a camera pose into uint8 RGB (and optional depth)."""

    def __init__(self, cfg: CameraConfig, scene: SceneConfig, texture_seed: int = 0) -> None:
        self.cfg = cfg
        self.scene = scene
        self.K = intrinsics(cfg)
        h, w = cfg.height, cfg.width
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        k = self.K
        optical = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], axis=-1)
        optical /= np.linalg.norm(optical, axis=-1, keepdims=True)
        self._rays_optical = optical.astype(np.float32)  # (H, W, 3) unit rays
        self.objects: list[SceneObject] = scene.primitives()
        light = np.asarray(scene.light.direction, dtype=np.float64)
        self._to_light = (-light / np.linalg.norm(light)).astype(np.float32)
        ground_shade = scene.light.ambient + scene.light.strength * max(0.0, float(self._to_light[2]))
        g = scene.ground
        self._ground_a = np.float32(ground_shade) * np.asarray(g.colour, np.float32)
        self._ground_b = np.float32(ground_shade) * np.asarray(g.colour2, np.float32)
        self._noise = _value_noise_tile(texture_seed) if g.texture == "noise" else None
        self._sky_zenith = np.asarray(scene.sky.colour, np.float32)
        self._sky_horizon = np.asarray(scene.sky.horizon_colour, np.float32)

    def set_object_position(self, index: int, position) -> None:
        """Move primitive `index` (0 = the target when the scene has one)."""
        item = self.objects[index]
        self.objects[index] = SceneObject(item.shape, item.colour, item.size_m, tuple(position), item.collides)

    # ------------------------------------------------------------------ rendering
    def render(self, position, rotation) -> tuple[np.ndarray, np.ndarray | None]:
        """Image of the scene from the body pose (position (3,), world_from_body (3,3)).

        Returns (uint8 HxWx3 RGB, float32 HxW optical z-depth in m or None).
        """
        lens, world_from_optical = camera_pose(self.cfg, position, rotation)
        h, w = self.cfg.height, self.cfg.width
        rays = self._rays_optical @ world_from_optical.T.astype(np.float32)  # (H, W, 3) world directions
        origin = lens.astype(np.float32)
        colour, dist = self._background(rays, origin)
        for item in self.objects:
            window = self._window(item, lens, world_from_optical)
            if window is None:
                continue
            v0, v1, u0, u1 = window
            sub = rays[v0:v1, u0:u1]
            t, normal = _intersect(item, sub, origin)
            if t is None:
                continue
            closer = t < dist[v0:v1, u0:u1]
            if not closer.any():
                continue
            shade = self.scene.light.ambient + self.scene.light.strength * np.maximum(normal @ self._to_light, 0.0)
            rgb = np.minimum(shade[..., None] * np.asarray(item.colour, np.float32), 1.0)
            colour[v0:v1, u0:u1][closer] = rgb[closer]
            dist[v0:v1, u0:u1][closer] = t[closer]
        if self.cfg.shadows:
            self._shadows(colour, rays, origin, dist)
        image = (np.minimum(colour, 1.0) * 255.0 + 0.5).astype(np.uint8)
        depth = None
        if self.cfg.depth:
            depth = (dist * self._rays_optical[..., 2]).astype(np.float32)  # ray length -> optical z
        return image, depth

    def _background(self, rays: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky gradient and the textured, fogged ground plane; returns (colour float32 HxWx3, distance HxW)."""
        dz = rays[..., 2]
        elevation = np.clip(dz, 0.0, 1.0)[..., None]
        colour = self._sky_horizon + (self._sky_zenith - self._sky_horizon) * np.sqrt(elevation)
        dist = np.full(dz.shape, np.inf, np.float32)
        height = float(origin[2])
        if height <= 0.0:
            return colour, dist
        ground = dz < -1e-6
        if not ground.any():
            return colour, dist
        ray_g = rays[ground]
        t = np.float32(-height) / ray_g[:, 2]
        x = origin[0] + t * ray_g[:, 0]
        y = origin[1] + t * ray_g[:, 1]
        g = self.scene.ground
        inv_scale = np.float32(1.0 / g.texture_scale_m)
        if g.texture == "plain":
            albedo = np.broadcast_to(self._ground_a, (len(t), 3))
        elif g.texture == "checker":
            parity = (np.floor(x * inv_scale) + np.floor(y * inv_scale)).astype(np.int64) & 1
            albedo = np.where(parity[:, None] == 0, self._ground_a, self._ground_b)
        else:  # noise: 16 blobs per tile, tile = 16 texture_scale_m
            size = self._noise.shape[0]
            cells = np.float32(size / 16.0) * inv_scale
            iu = (np.floor(x * cells).astype(np.int64)) % size
            iv = (np.floor(y * cells).astype(np.int64)) % size
            mix = self._noise[iv, iu][:, None]
            albedo = self._ground_a + (self._ground_b - self._ground_a) * mix
        fog = (1.0 - np.exp(-t / np.float32(self.scene.fog_distance_m)))[:, None]
        colour[ground] = albedo + (self._sky_horizon - albedo) * fog
        dist[ground] = t
        return colour, dist

    def _window(self, item: SceneObject, lens: np.ndarray, world_from_optical: np.ndarray):
        """Pixel rows/cols (v0, v1, u0, u1) that can see the item, or None if it is out of view."""
        half = np.asarray(item.extents) / 2.0
        corners = np.asarray(item.position) + half * np.array(
            [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
        cam = (corners - lens) @ world_from_optical  # optical coordinates, rows = corners
        h, w = self.cfg.height, self.cfg.width
        if (cam[:, 2] <= NEAR_M).all():
            return None  # entirely behind the camera
        if (cam[:, 2] <= NEAR_M).any():
            return 0, h, 0, w  # straddles the image plane: test every pixel
        k = self.K
        u = k[0, 0] * cam[:, 0] / cam[:, 2] + k[0, 2]
        v = k[1, 1] * cam[:, 1] / cam[:, 2] + k[1, 2]
        u0, u1 = max(int(math.floor(u.min())), 0), min(int(math.ceil(u.max())) + 1, w)
        v0, v1 = max(int(math.floor(v.min())), 0), min(int(math.ceil(v.max())) + 1, h)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1

    def _shadows(self, colour: np.ndarray, rays: np.ndarray, origin: np.ndarray, dist: np.ndarray) -> None:
        """Darken ground pixels whose path to the light is blocked by an object (optional, slower)."""
        ground = np.isfinite(dist) & (np.abs(origin[2] + dist * rays[..., 2]) < 1e-3)
        if not ground.any():
            return
        points = origin + dist[ground][:, None] * rays[ground]
        to_light = np.broadcast_to(self._to_light, points.shape)
        blocked = np.zeros(len(points), bool)
        for item in self.objects:
            t, _ = _intersect(item, to_light[None], points[None])
            if t is not None:
                blocked |= np.isfinite(t[0])
        if blocked.any():
            light = self.scene.light
            direct = light.strength * max(0.0, float(self._to_light[2]))
            factor = light.ambient / (light.ambient + direct) if light.ambient + direct > 0 else 1.0
            shaded = colour[ground]
            shaded[blocked] *= np.float32(factor)
            colour[ground] = shaded


def _intersect(item: SceneObject, rays: np.ndarray, origin: np.ndarray):
    """Ray distances (inf where missed) and unit normals for rays (..., 3) from origin ((3,) or (..., 3)).

    Returns (None, None) when no ray hits.
    """
    centre = np.asarray(item.position, np.float32)
    oc = origin - centre
    sx, sy, sz = item.size_m  # type: ignore[misc]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if item.shape == "sphere":
            radius = np.float32(sx / 2.0)
            b = (rays * oc).sum(-1)
            c = (oc * oc).sum(-1) - radius * radius
            disc = b * b - c
            hit = disc >= 0.0
            if not hit.any():
                return None, None
            root = np.sqrt(np.where(hit, disc, 0.0))
            t = -b - root
            t = np.where(t > NEAR_M, t, -b + root)  # inside the sphere: exit point
            t = np.where(hit & (t > NEAR_M), t, np.inf).astype(np.float32)
            normal = (oc + np.where(np.isfinite(t), t, 0.0)[..., None] * rays) / radius
        elif item.shape == "box":
            half = np.asarray((sx / 2.0, sy / 2.0, sz / 2.0), np.float32)
            inv = 1.0 / np.where(np.abs(rays) < 1e-12, np.float32(1e-12), rays)
            t1 = (-half - oc) * inv
            t2 = (half - oc) * inv
            near = np.minimum(t1, t2)
            far = np.maximum(t1, t2)
            t_near = near.max(-1)
            t_far = far.min(-1)
            t = np.where(t_near > NEAR_M, t_near, t_far)
            hit = (t_far >= t_near) & (t > NEAR_M)
            if not hit.any():
                return None, None
            t = np.where(hit, t, np.inf).astype(np.float32)
            axis = near.argmax(-1)
            normal = np.zeros(rays.shape, np.float32)
            sign = -np.sign(np.take_along_axis(rays, axis[..., None], -1))
            np.put_along_axis(normal, axis[..., None], sign, -1)
        else:  # vertical cylinder
            radius = np.float32(sx / 2.0)
            half_h = np.float32(sz / 2.0)
            dx, dy, dz = rays[..., 0], rays[..., 1], rays[..., 2]
            ox, oy, oz = oc[..., 0], oc[..., 1], oc[..., 2]
            a = dx * dx + dy * dy
            b = dx * ox + dy * oy
            c = ox * ox + oy * oy - radius * radius
            disc = b * b - a * c
            root = np.sqrt(np.maximum(disc, 0.0))
            t_side = (-b - root) / a
            z_side = oz + t_side * dz
            side = (disc >= 0.0) & (a > 1e-12) & (t_side > NEAR_M) & (np.abs(z_side) <= half_h)
            t_side = np.where(side, t_side, np.inf)
            # Caps: top (z = +h/2) seen from above, bottom (z = -h/2) from below.
            cap_z = np.where(dz < 0.0, half_h, -half_h)
            t_cap = (cap_z - oz) / dz
            cx, cy = ox + t_cap * dx, oy + t_cap * dy
            cap = (np.abs(dz) > 1e-12) & (t_cap > NEAR_M) & (cx * cx + cy * cy <= radius * radius)
            t_cap = np.where(cap, t_cap, np.inf)
            t = np.minimum(t_side, t_cap).astype(np.float32)
            if not np.isfinite(t).any():
                return None, None
            p = oc + np.where(np.isfinite(t), t, 0.0)[..., None] * rays
            on_cap = t_cap <= t_side
            normal = np.stack([np.where(on_cap, 0.0, p[..., 0] / radius), np.where(on_cap, 0.0, p[..., 1] / radius),
                               np.where(on_cap, np.sign(-dz), 0.0)], axis=-1).astype(np.float32)
    return t, normal.astype(np.float32)
