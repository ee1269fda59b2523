"""What the world looks like and what the drone can hit: `SceneConfig` and its PyBullet bodies.

World frame: x forward (at yaw 0), y left, z up, metres; the ground is the plane z = 0.
Colours are RGB in 0..1. The camera renders scenes with `camera.RayCastRenderer`;
PyBullet only gets the collision shapes (no visuals), so what collides is what is seen.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pybullet as pb

from liquid_control.simulation.image_effects import ImageEffects  # noqa: F401  (re-exported: part of the scene API)

SHAPES = ("sphere", "box", "cylinder")
GROUND_TEXTURES = ("plain", "checker", "noise")
OBSTACLE_KINDS = ("tree", "post")


def _triple(value, what: str, low: float = -math.inf, high: float = math.inf) -> tuple[float, float, float]:
    try:
        items = tuple(float(v) for v in value)
    except TypeError:
        raise ValueError(f"{what} must be 3 numbers, got {value!r}") from None
    if len(items) != 3 or not all(math.isfinite(v) and low <= v <= high for v in items):
        raise ValueError(f"{what} must be 3 finite numbers in [{low}, {high}], got {value!r}")
    return items  # type: ignore[return-value]


def _colour(value, what: str) -> tuple[float, float, float]:
    return _triple(value, what, 0.0, 1.0)


@dataclass(frozen=True)
class GroundConfig:
    """Ground plane appearance. texture: plain | checker (squares of texture_scale_m) | noise (blobs ~scale)."""

    colour: tuple[float, float, float] = (0.36, 0.42, 0.26)
    texture: str = "checker"
    texture_scale_m: float = 1.0
    colour2: tuple[float, float, float] = (0.30, 0.36, 0.21)

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour", _colour(self.colour, "ground colour"))
        object.__setattr__(self, "colour2", _colour(self.colour2, "ground colour2"))
        if self.texture not in GROUND_TEXTURES:
            raise ValueError(f"ground texture must be one of {GROUND_TEXTURES}, got {self.texture!r}")
        if not self.texture_scale_m > 0.0:
            raise ValueError(f"ground texture_scale_m must be positive, got {self.texture_scale_m}")


@dataclass(frozen=True)
class SkyConfig:
    """Sky gradient from horizon_colour (elevation 0) to colour (zenith)."""

    colour: tuple[float, float, float] = (0.40, 0.60, 0.90)
    horizon_colour: tuple[float, float, float] = (0.80, 0.86, 0.92)

    def __post_init__(self) -> None:
        object.__setattr__(self, "colour", _colour(self.colour, "sky colour"))
        object.__setattr__(self, "horizon_colour", _colour(self.horizon_colour, "sky horizon_colour"))


@dataclass(frozen=True)
class LightConfig:
    """Directional light. direction: where the light travels (world, need not be unit; z < 0 = from above).

    A surface with normal n gets colour * (ambient + strength * max(0, -n·direction)), clipped to 1.
    """

    direction: tuple[float, float, float] = (0.4, 0.3, -1.0)
    strength: float = 0.75
    ambient: float = 0.40

    def __post_init__(self) -> None:
        direction = _triple(self.direction, "light direction")
        if math.hypot(*direction) < 1e-9:
            raise ValueError("light direction must be non-zero")
        object.__setattr__(self, "direction", direction)
        if self.strength < 0.0 or self.ambient < 0.0:
            raise ValueError("light strength and ambient must be >= 0")


@dataclass(frozen=True)
class SceneObject:
    """A primitive. position: centre (m, world). size_m: full extents (x, y, z) in metres, or one number
    for all three. sphere: diameter = size_m[0]; box: axis-aligned extents; cylinder: vertical,
    diameter = size_m[0], height = size_m[2]. collides: whether the drone crashes into it."""

    shape: str = "sphere"
    colour: tuple[float, float, float] = (0.9, 0.1, 0.1)
    size_m: float | tuple[float, float, float] = 0.5
    position: tuple[float, float, float] = (5.0, 0.0, 1.0)
    collides: bool = True

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"object shape must be one of {SHAPES}, got {self.shape!r}")
        object.__setattr__(self, "colour", _colour(self.colour, f"{self.shape} colour"))
        object.__setattr__(self, "position", _triple(self.position, f"{self.shape} position"))
        size = self.size_m
        size = (size, size, size) if isinstance(size, (int, float)) else size
        size = _triple(size, f"{self.shape} size_m", 1e-3, 1e3)
        object.__setattr__(self, "size_m", size)

    @property
    def extents(self) -> tuple[float, float, float]:
        """Axis-aligned bounding box extents (m)."""
        sx, sy, sz = self.size_m  # type: ignore[misc]
        if self.shape == "sphere":
            return (sx, sx, sx)
        if self.shape == "cylinder":
            return (sx, sx, sz)
        return (sx, sy, sz)


@dataclass(frozen=True)
class Obstacle:
    """A tree (trunk + round crown) or a post (cylinder) standing on the ground at (x, y)."""

    kind: str = "tree"
    position: tuple[float, float] | tuple[float, float, float] = (3.0, 2.0)
    height_m: float = 3.0
    radius_m: float = 0.12  # trunk / post radius
    crown_radius_m: float = 0.8  # tree only
    colour: tuple[float, float, float] = (0.40, 0.28, 0.16)
    crown_colour: tuple[float, float, float] = (0.16, 0.40, 0.14)

    def __post_init__(self) -> None:
        if self.kind not in OBSTACLE_KINDS:
            raise ValueError(f"obstacle kind must be one of {OBSTACLE_KINDS}, got {self.kind!r}")
        pos = tuple(float(v) for v in self.position)
        if len(pos) not in (2, 3) or not all(math.isfinite(v) for v in pos):
            raise ValueError(f"obstacle position must be (x, y) or (x, y, z), got {self.position!r}")
        object.__setattr__(self, "position", pos[:2])
        if not (self.height_m > 0 and self.radius_m > 0 and self.crown_radius_m > 0):
            raise ValueError("obstacle height_m, radius_m and crown_radius_m must be positive")
        object.__setattr__(self, "colour", _colour(self.colour, "obstacle colour"))
        object.__setattr__(self, "crown_colour", _colour(self.crown_colour, "obstacle crown_colour"))

    def primitives(self) -> list[SceneObject]:
        """The obstacle as primitives (all colliding)."""
        x, y = self.position  # type: ignore[misc]
        diameter = 2.0 * self.radius_m
        if self.kind == "post":
            return [SceneObject("cylinder", self.colour, (diameter, diameter, self.height_m),
                                (x, y, self.height_m / 2.0))]
        crown = 2.0 * self.crown_radius_m
        trunk_height = max(self.height_m - self.crown_radius_m, self.height_m * 0.3)
        return [SceneObject("cylinder", self.colour, (diameter, diameter, trunk_height), (x, y, trunk_height / 2.0)),
                SceneObject("sphere", self.crown_colour, crown, (x, y, self.height_m - self.crown_radius_m))]


@dataclass(frozen=True)
class SceneConfig:
    """Everything the camera sees. The target never collides (reaching it is the point)."""

    ground: GroundConfig = field(default_factory=GroundConfig)
    sky: SkyConfig = field(default_factory=SkyConfig)
    light: LightConfig = field(default_factory=LightConfig)
    target: SceneObject | None = field(
        default_factory=lambda: SceneObject("sphere", (0.9, 0.1, 0.1), 0.5, (5.0, 0.0, 1.0), collides=False))
    distractors: Sequence[SceneObject] = ()
    obstacles: Sequence[Obstacle] = ()
    fog_distance_m: float = 60.0  # ground at this distance is half horizon colour (hides aliasing far away)

    def __post_init__(self) -> None:
        for name, kind in (("distractors", SceneObject), ("obstacles", Obstacle)):
            items = tuple(getattr(self, name))
            bad = [item for item in items if not isinstance(item, kind)]
            if bad:
                raise ValueError(f"SceneConfig.{name} must hold {kind.__name__} items, got {bad[0]!r}")
            object.__setattr__(self, name, items)
        if self.target is not None and not isinstance(self.target, SceneObject):
            raise ValueError(f"SceneConfig.target must be a SceneObject or None, got {self.target!r}")
        if not self.fog_distance_m > 0:
            raise ValueError("fog_distance_m must be positive")

    def primitives(self) -> list[SceneObject]:
        """All visible primitives: target first, then distractors, then obstacle parts."""
        items: list[SceneObject] = [self.target] if self.target is not None else []
        items.extend(self.distractors)
        for obstacle in self.obstacles:
            items.extend(obstacle.primitives())
        return items


def add_collision_body(client: int, item: SceneObject) -> int:
    """Create a static PyBullet body for one primitive; returns its body id."""
    sx, sy, sz = item.size_m  # type: ignore[misc]
    if item.shape == "sphere":
        shape = pb.createCollisionShape(pb.GEOM_SPHERE, radius=sx / 2.0, physicsClientId=client)
    elif item.shape == "box":
        shape = pb.createCollisionShape(pb.GEOM_BOX, halfExtents=(sx / 2.0, sy / 2.0, sz / 2.0), physicsClientId=client)
    else:
        shape = pb.createCollisionShape(pb.GEOM_CYLINDER, radius=sx / 2.0, height=sz, physicsClientId=client)
    return pb.createMultiBody(0.0, shape, basePosition=item.position, physicsClientId=client)


def build_collision_bodies(client: int, scene: SceneConfig) -> dict[int, SceneObject]:
    """Static bodies for every colliding primitive of the scene; body id -> primitive."""
    return {add_collision_body(client, item): item for item in scene.primitives() if item.collides}
