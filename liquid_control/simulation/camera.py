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
    depth adds a float32 z-depth image (m, inf for sky); shadows casts object shadows on the ground;
    segmentation keeps a per-pixel class image of the last render (`RayCastRenderer.last_segmentation`,
    values in SEGMENT_CLASSES), the mask that training's background recolouring needs."""

    width: int = 128
    height: int = 96
    fov_deg: float = 60.0
    pitch_deg: float = 0.0
    mount_offset_m: tuple[float, float, float] = (0.03, 0.0, 0.0)
    rate_hz: float = 30.0
    depth: bool = False
    shadows: bool = False
    segmentation: bool = False

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


# Per-pixel classes of `RayCastRenderer.last_segmentation` (uint8).
# SEGMENT_NONE marks a frame without scene content (a camera blackout).
SEGMENT_SKY, SEGMENT_GROUND, SEGMENT_TARGET, SEGMENT_OTHER, SEGMENT_NONE = 0, 1, 2, 3, 255
SEGMENT_CLASSES = {"sky": SEGMENT_SKY, "ground": SEGMENT_GROUND, "target": SEGMENT_TARGET, "other": SEGMENT_OTHER,
                   "none": SEGMENT_NONE}


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


def quaternion_from_rotation(rotation) -> np.ndarray:
    """Unit quaternion (x, y, z, w), w >= 0, of a 3x3 rotation matrix (Shepperd's method: the largest
    of w, x, y, z is computed first, so the result stays accurate near 180-degree turns)."""
    m = np.asarray(rotation, dtype=float).reshape(3, 3)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * math.sqrt(1.0 + trace)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k])
        q = np.zeros(4)
        q[i] = 0.25 * s
        q[j] = (m[j, i] + m[i, j]) / s
        q[k] = (m[k, i] + m[i, k]) / s
        q[3] = (m[k, j] - m[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0.0 else q


def mount_transform(cfg: CameraConfig) -> tuple[np.ndarray, np.ndarray]:
    """The camera's optical frame in the body frame, as TF's base_link -> camera optical frame transform:
    (translation = the lens position, body FLU, m; rotation quaternion x, y, z, w taking optical vectors
    (REP-103: x right, y down, z forward) to body FLU). With pitch 0 the rotation is the standard optical
    one, (-0.5, 0.5, -0.5, 0.5)."""
    rotation = quaternion_from_rotation(body_from_camera(cfg) @ FLU_FROM_OPTICAL)
    return np.asarray(cfg.mount_offset_m, dtype=float), rotation


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
    """Renders a SceneConfig from a camera pose into uint8 RGB (and optional depth).

    Arrays are planar, (3, H, W): every numpy operation then runs over contiguous memory,
    which is several times faster than interleaved (H, W, 3) at these sizes.
    """

    def __init__(self, cfg: CameraConfig, scene: SceneConfig, texture_seed: int = 0) -> None:
        self.cfg = cfg
        self.scene = scene
        self.K = intrinsics(cfg)
        h, w = cfg.height, cfg.width
        u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        k = self.K
        optical = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)])
        optical /= np.linalg.norm(optical, axis=0, keepdims=True)
        self._rays_optical = optical.astype(np.float32).reshape(3, h * w)  # unit rays, planar
        self._optical_z = self._rays_optical[2].reshape(h, w).copy()  # cos(angle to the axis): ray length -> depth
        self.objects: list[SceneObject] = scene.primitives()
        # Per-object float32 arrays, made once (numpy call overhead dominates for small windows).
        self._centres = [np.asarray(item.position, np.float32).reshape(3, 1, 1) for item in self.objects]
        albedos = [np.asarray(item.colour, np.float32).reshape(3, 1) for item in self.objects]
        self._ambient_albedos = [np.float32(scene.light.ambient) * a for a in albedos]
        self._direct_albedos = [np.float32(scene.light.strength) * a for a in albedos]
        light = np.asarray(scene.light.direction, dtype=np.float64)
        self._to_light = (-light / np.linalg.norm(light)).astype(np.float32)
        ground_shade = scene.light.ambient + scene.light.strength * max(0.0, float(self._to_light[2]))
        g = scene.ground
        column = (3, 1, 1)
        self._ground_a = (np.float32(ground_shade) * np.asarray(g.colour, np.float32)).reshape(column)
        self._ground_b = (np.float32(ground_shade) * np.asarray(g.colour2, np.float32)).reshape(column)
        self._noise = _value_noise_tile(texture_seed) if g.texture == "noise" else None
        self._sky_zenith = np.asarray(scene.sky.colour, np.float32).reshape(column)
        self._sky_horizon = np.asarray(scene.sky.horizon_colour, np.float32).reshape(column)
        # Work buffers reused every frame: allocating ~0.5 MB arrays per operation made the allocator
        # return memory to the OS and fault it back in, which cost more than the arithmetic.
        self._rays = np.empty((3, h * w), np.float32)
        self._colour = np.empty((3, h, w), np.float32)
        self._albedo = np.empty((3, h, w), np.float32)
        self._scratch3 = np.empty((3, h, w), np.float32)
        self._t = np.empty((h, w), np.float32)
        self._x = np.empty((h, w), np.float32)
        self._y = np.empty((h, w), np.float32)
        self._ground_f = np.empty((h, w), np.float32)
        self._ground = np.empty((h, w), bool)
        # Object classes (target first in scene.primitives()), and the last render's class image.
        self._segment_ids = [np.uint8(SEGMENT_TARGET if k == 0 and scene.target is not None else SEGMENT_OTHER)
                             for k in range(len(self.objects))]
        self.last_segmentation: np.ndarray | None = None

    def set_object_position(self, index: int, position) -> None:
        """Move primitive `index` (0 = the target when the scene has one)."""
        item = self.objects[index]
        self.objects[index] = SceneObject(item.shape, item.colour, item.size_m, tuple(position), item.collides)
        self._centres[index] = np.asarray(self.objects[index].position, np.float32).reshape(3, 1, 1)

    # ------------------------------------------------------------------ rendering
    def render(self, position, rotation) -> tuple[np.ndarray, np.ndarray | None]:
        """Image of the scene from the body pose (position (3,), world_from_body (3,3)).

        Returns (uint8 HxWx3 RGB, float32 HxW optical z-depth in m (inf for sky) or None).
        """
        h, w = self.cfg.height, self.cfg.width
        lens, world_from_optical = camera_pose(self.cfg, position, rotation)
        rays = np.matmul(world_from_optical.astype(np.float32), self._rays_optical, out=self._rays).reshape(3, h, w)
        origin = lens.astype(np.float32)
        colour, dist = self._background(rays, origin)
        segmentation = None
        if self.cfg.segmentation:
            segmentation = np.where(np.isfinite(dist), np.uint8(SEGMENT_GROUND), np.uint8(SEGMENT_SKY))
        optical_from_world = world_from_optical.T.tolist()
        lens_list = lens.tolist()
        for item, lit, direct, segment_id in zip(self.objects, self._ambient_albedos, self._direct_albedos,
                                                 self._segment_ids):
            window = self._window(item, lens_list, optical_from_world)
            if window is None:
                continue
            v0, v1, u0, u1 = window
            sub = rays[:, v0:v1, u0:u1]
            px, py, pz = item.position  # type: ignore[misc]
            offset = (lens_list[0] - px, lens_list[1] - py, lens_list[2] - pz)
            t = _intersect(item, sub, offset)
            if t is None:
                continue
            dist_view = dist[v0:v1, u0:u1]
            closer = t < dist_view
            if not closer.any():
                continue
            t_hit = t[closer]
            local = np.array(offset, np.float32)[:, None] + t_hit * sub[:, closer]  # (3, n) hit points - centre
            if item.shape == "sphere":  # normal = local / radius
                cosine = (self._to_light * np.float32(2.0 / item.size_m[0])) @ local  # type: ignore[index]
            else:
                cosine = self._to_light @ _normals(item, local)
            # colour = albedo * (ambient + strength * max(0, n.l)); clipped to 1 once, at the end.
            colour[:, v0:v1, u0:u1][:, closer] = lit + direct * np.maximum(cosine, np.float32(0.0))
            dist_view[closer] = t_hit
            if segmentation is not None:
                segmentation[v0:v1, u0:u1][closer] = segment_id
        if self.cfg.shadows:
            self._shadows(colour, rays, origin, dist)
        np.minimum(colour, np.float32(1.0), out=colour)
        colour *= np.float32(255.0)
        colour += np.float32(0.5)
        planar = colour.astype(np.uint8)
        image = cv2.merge([planar[0], planar[1], planar[2]])  # planar -> HxWx3, far faster than a transpose copy
        depth = (dist * self._optical_z).astype(np.float32) if self.cfg.depth else None
        self.last_segmentation = segmentation
        return image, depth

    def _background(self, rays: np.ndarray, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sky gradient and the textured, fogged ground plane; returns (colour float32 3xHxW, distance HxW).

        Whole-array arithmetic into preallocated buffers (no boolean indexing, no np.where on
        3xHxW: both are slower at these sizes). The colour buffer is reused by the next frame.
        """
        dz = rays[2]
        colour, t, x, y = self._colour, self._t, self._x, self._y
        # Sky: horizon colour at elevation 0 to zenith colour, by sqrt(sin(elevation)).
        np.clip(dz, np.float32(0.0), np.float32(1.0), out=x)
        np.sqrt(x, out=x)
        np.multiply(self._sky_zenith - self._sky_horizon, x, out=colour)
        colour += self._sky_horizon
        dist = np.full(dz.shape, np.inf, np.float32)
        height = float(origin[2])
        if height <= 0.0:  # lens at or below the ground plane: sky only
            return colour, dist
        ground = np.less(dz, np.float32(-1e-6), out=self._ground)
        t.fill(0.0)
        np.divide(np.float32(-height), dz, out=t, where=ground)  # distance to the ground plane
        np.divide(np.float32(-height), dz, out=dist, where=ground)
        g = self.scene.ground
        albedo = self._albedo
        if g.texture == "plain":
            albedo[...] = self._ground_a
        else:
            np.multiply(t, rays[0], out=x)
            x += origin[0]
            np.multiply(t, rays[1], out=y)
            y += origin[1]
            if g.texture == "checker":
                inv_scale = np.float32(1.0 / g.texture_scale_m)
                x *= inv_scale
                np.floor(x, out=x)
                y *= inv_scale
                np.floor(y, out=y)
                x += y  # square index sum; its parity picks the colour
                np.multiply(x, np.float32(0.5), out=y)
                np.floor(y, out=y)
                y *= np.float32(2.0)
                x -= y
                mix = x
            else:  # noise: 16 blobs per tile, tile = 16 texture_scale_m
                size = self._noise.shape[0]
                cells = np.float32(size / 16.0 / g.texture_scale_m)
                iu = np.floor(x * cells).astype(np.int64) % size
                iv = np.floor(y * cells).astype(np.int64) % size
                mix = self._noise[iv, iu]
            np.multiply(self._ground_b - self._ground_a, mix, out=albedo)
            albedo += self._ground_a
        # Aerial-perspective fog: the ground fades to the horizon colour, fraction t / (t + D).
        np.add(t, np.float32(self.scene.fog_distance_m), out=y)
        np.divide(t, y, out=y)
        scratch = self._scratch3
        np.subtract(self._sky_horizon, albedo, out=scratch)
        scratch *= y
        albedo += scratch  # = ground colour
        # colour = sky + (ground colour - sky) * ground
        albedo -= colour
        np.copyto(self._ground_f, ground)
        albedo *= self._ground_f
        colour += albedo
        return colour, dist

    def _window(self, item: SceneObject, lens: list, optical_from_world: list):
        """Pixel rows/cols (v0, v1, u0, u1) that can see the item, or None if it is out of view.

        The projection of a convex body in front of the camera lies inside the bounding
        rectangle of its bounding box's projected corners. Plain floats: cheaper than numpy
        for a handful of numbers.
        """
        cx, cy, cz = item.position  # type: ignore[misc]
        ex, ey, ez = item.extents
        hx, hy, hz = 0.5 * ex + 1e-3, 0.5 * ey + 1e-3, 0.5 * ez + 1e-3
        dx, dy, dz = cx - lens[0], cy - lens[1], cz - lens[2]
        r0, r1, r2 = optical_from_world
        # Centre and half-axis vectors of the box in optical coordinates.
        x0 = r0[0] * dx + r0[1] * dy + r0[2] * dz
        y0 = r1[0] * dx + r1[1] * dy + r1[2] * dz
        z0 = r2[0] * dx + r2[1] * dy + r2[2] * dz
        h, w = self.cfg.height, self.cfg.width
        sphere = item.shape == "sphere"  # a sphere's box can be taken axis-aligned in the camera frame
        z_reach = hx if sphere else abs(r2[0]) * hx + abs(r2[1]) * hy + abs(r2[2]) * hz
        if z0 + z_reach <= NEAR_M:
            return None  # entirely behind the camera
        if z0 - z_reach <= NEAR_M:
            return 0, h, 0, w  # straddles the image plane: test every pixel
        if sphere:
            near, far = z0 - hx, z0 + hx
            u_lo, u_hi = min((x0 - hx) / near, (x0 - hx) / far), max((x0 + hx) / near, (x0 + hx) / far)
            v_lo, v_hi = min((y0 - hx) / near, (y0 - hx) / far), max((y0 + hx) / near, (y0 + hx) / far)
            return self._pixel_window(u_lo, u_hi, v_lo, v_hi)
        # Optical-frame half-axis vectors of the box; corners = centre +- a +- b +- c.
        ax, ay, az = r0[0] * hx, r1[0] * hx, r2[0] * hx
        bx, by, bz = r0[1] * hy, r1[1] * hy, r2[1] * hy
        cx_, cy_, cz_ = r0[2] * hz, r1[2] * hz, r2[2] * hz
        us, vs = [], []
        for sa in (-1.0, 1.0):
            pa = (x0 + sa * ax, y0 + sa * ay, z0 + sa * az)
            for sb in (-1.0, 1.0):
                qx, qy, qz = pa[0] + sb * bx, pa[1] + sb * by, pa[2] + sb * bz
                for x, y, z in ((qx - cx_, qy - cy_, qz - cz_), (qx + cx_, qy + cy_, qz + cz_)):
                    us.append(x / z)
                    vs.append(y / z)
        return self._pixel_window(min(us), max(us), min(vs), max(vs))

    def _pixel_window(self, u_lo: float, u_hi: float, v_lo: float, v_hi: float):
        """Pixel rows/cols covering normalised image coordinates [u_lo, u_hi] x [v_lo, v_hi], or None."""
        k, h, w = self.K, self.cfg.height, self.cfg.width
        u0 = max(int(math.floor(k[0, 0] * u_lo + k[0, 2])), 0)
        u1 = min(int(math.ceil(k[0, 0] * u_hi + k[0, 2])) + 1, w)
        v0 = max(int(math.floor(k[1, 1] * v_lo + k[1, 2])), 0)
        v1 = min(int(math.ceil(k[1, 1] * v_hi + k[1, 2])) + 1, h)
        if u0 >= u1 or v0 >= v1:
            return None
        return v0, v1, u0, u1

    def _shadows(self, colour: np.ndarray, rays: np.ndarray, origin: np.ndarray, dist: np.ndarray) -> None:
        """Darken ground pixels whose path to the light is blocked by an object (optional, slower)."""
        ground = np.isfinite(dist) & (np.abs(origin[2] + dist * rays[2]) < 1e-3)
        if not ground.any() or self._to_light[2] <= 0.0:
            return
        points = origin[:, None] + dist[ground] * rays[:, ground]  # (3, n) ground points
        to_light = np.broadcast_to(self._to_light[:, None], points.shape)
        blocked = np.zeros(points.shape[1], bool)
        for centre, item in zip(self._centres, self.objects):
            t = _intersect(item, to_light, points - centre[:, :, 0])
            if t is not None:
                blocked |= np.isfinite(t)
        if blocked.any():
            light = self.scene.light
            direct = light.strength * float(self._to_light[2])
            factor = np.float32(light.ambient / (light.ambient + direct))  # only the ambient part remains
            shaded = colour[:, ground]
            shaded[:, blocked] *= factor
            colour[:, ground] = shaded


def _intersect(item: SceneObject, rays: np.ndarray, oc) -> np.ndarray | None:
    """Distances along unit rays (3, ...) to the item; inf where missed.

    oc: ray origins minus the item's centre: 3 floats (one origin, the camera: the fast path, since
    every origin-only term is then a Python scalar) or an array (3, ...) broadcastable against rays.
    Returns None when no ray hits. Rays starting inside an item see its far side.
    """
    single = isinstance(oc, tuple)
    ox, oy, oz = oc[0], oc[1], oc[2]
    dx, dy, dz = rays[0], rays[1], rays[2]
    sx, sy, sz = item.size_m  # type: ignore[misc]
    near = np.float32(NEAR_M)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # Misses are found by NaN: sqrt of a negative discriminant is NaN and NaN > near is False,
        # which saves the separate discriminant tests (numpy call overhead dominates small windows).
        if item.shape == "sphere":
            radius = sx / 2.0
            c = ox * ox + oy * oy + oz * oz - radius * radius  # < 0: origin inside the sphere
            nb = dx * -ox + dy * -oy + dz * -oz  # -b: distance along the ray to the closest approach
            root = np.sqrt(nb * nb - c)
            t = nb - root  # entry point
            if not single or c <= 0.0:
                t = np.where(t > near, t, nb + root)  # inside the sphere: exit point
            hit = t > near
        elif item.shape == "box":
            t_near, t_far = None, None
            for o, d, half in ((ox, dx, sx / 2.0), (oy, dy, sy / 2.0), (oz, dz, sz / 2.0)):
                inv = 1.0 / d  # +-inf on axis-parallel rays: the slab test still works
                t1 = (-half - o) * inv
                t2 = (half - o) * inv
                lo, hi = np.fmin(t1, t2), np.fmax(t1, t2)
                t_near = lo if t_near is None else np.fmax(t_near, lo)
                t_far = hi if t_far is None else np.fmin(t_far, hi)
            t = np.where(t_near > near, t_near, t_far)
            hit = (t_far >= t_near) & (t > near)
        else:  # vertical cylinder
            radius = sx / 2.0
            half_h = sz / 2.0
            a = dx * dx + dy * dy
            nb = dx * -ox + dy * -oy
            root = np.sqrt(nb * nb - a * (ox * ox + oy * oy - radius * radius))
            t_side = (nb - root) / a
            z_side = oz + t_side * dz
            hit = (t_side > near) & (z_side <= half_h) & (z_side >= -half_h)
            t = t_side
            # Caps: the top (z = +h/2) is seen from above, the bottom from below. From a single
            # origin between the two planes no cap can be seen from outside: skip the work.
            if not single or abs(oz) > half_h:
                cap_z = (half_h if oz > half_h else -half_h) if single else np.where(dz < 0.0, half_h, -half_h)
                t_cap = (cap_z - oz) / dz
                cx, cy = ox + t_cap * dx, oy + t_cap * dy
                cap = (t_cap > near) & (cx * cx + cy * cy <= radius * radius)
                t = np.minimum(np.where(hit, t_side, np.inf), np.where(cap, t_cap, np.inf))
                hit |= cap
        if not hit.any():
            return None
        return np.where(hit, t, np.float32(np.inf)).astype(np.float32, copy=False)


def _normals(item: SceneObject, local: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, n) at surface points (3, n) of the item, given relative to its centre."""
    sx, sy, sz = item.size_m  # type: ignore[misc]
    if item.shape == "sphere":
        return local / np.float32(sx / 2.0)
    if item.shape == "box":
        ratio = local / np.asarray((sx / 2.0, sy / 2.0, sz / 2.0), np.float32)[:, None]
        face = np.abs(ratio).argmax(0)  # the face the point lies on
        normal = np.zeros_like(local)
        columns = np.arange(local.shape[1])
        normal[face, columns] = np.sign(ratio[face, columns])
        return normal
    radius = np.float32(sx / 2.0)
    # On a cap when the point is (numerically) at the top/bottom and inside the rim.
    on_cap = (np.abs(local[2]) >= np.float32(sz / 2.0) * 0.999) & (np.hypot(local[0], local[1]) < radius * 0.999)
    return np.stack([np.where(on_cap, 0.0, local[0] / radius), np.where(on_cap, 0.0, local[1] / radius),
                     np.where(on_cap, np.sign(local[2]), 0.0)]).astype(np.float32)
