"""Where the passing occluder of an occlusion event is, and the blackout windows of an episode.

An "occluder" event (scenario.OcclusionEvent) moves a vertical cylinder that stands on the ground,
as tall as the arena, across the line of sight from the camera to the target. It is placed anew at
every control step from the current lens and target positions, so it hides the target whatever the
drone and the target do:

  * its axis lies on the horizontal line of sight, halfway to the target, but never closer to the lens
    than its radius + LENS_CLEARANCE_M, nor closer to the target than the target's horizontal bounding
    radius + TARGET_CLEARANCE_M (the first wins when both cannot hold);
  * it is offset sideways by s(t) = side · cover · (t − mid) / (duration / 2). Every ray from the lens
    to the target crosses the cylinder's depth within r·c/(D − r) of the line of sight (r: target
    bounding radius, c: cylinder depth, D: target distance), so for |s| <= cover = R − r·c/(D − r)
    (R: cylinder radius) the whole target is behind the cylinder: exactly in [start, end];
  * before and after, it is on its way in or out; once it is outside the camera's horizontal view
    (or more than MAX_PASS_S from the window) it is parked below the ground, where it is never drawn.

The occluder is drawn by the camera only (it never collides), and the tasks' "target in view" ignores
occlusion, so the expert and the success rules are unchanged: the policy has to keep the course or the
chase through the gap.

Blackout events are not placed: the world blanks frames captured inside their windows
(`ImageEffects.blackouts`). Black frames rather than missing ones, because then the policy still steps
through the gap and has to carry the target in its state; a missing frame would only look like a drop.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from liquid_control.simulation.sampling import OcclusionEvent

LENS_CLEARANCE_M = 0.15  # the camera must stay outside the cylinder (inside, it would see its far wall)
TARGET_CLEARANCE_M = 0.05
MAX_PASS_S = 2.0  # longest time the occluder is in the scene before and after its window
MIN_COVER_FRACTION = 0.1  # when the geometry leaves no room to hide all of the target, still pass by
PARK_DISTANCE_M = 1000.0


def blackout_windows(events: Iterable[OcclusionEvent]) -> tuple[tuple[float, float], ...]:
    """(start s, end s) of the blackout events."""
    return tuple((event.start_s, event.end_s) for event in events if event.mode == "blackout")


def occluder_centre(events: Iterable[OcclusionEvent], time_s: float, lens, target, target_radius_m: float,
                    occluder_radius_m: float, height_m: float, half_hfov_rad: float) -> np.ndarray | None:
    """Centre (world, m) of the occluder cylinder at episode time `time_s`, or None when no occluder
    event is under way (see the module docstring for the geometry)."""
    lens, target = np.asarray(lens, dtype=float), np.asarray(target, dtype=float)
    radius = occluder_radius_m
    for event in events:
        if event.mode != "occluder":
            continue
        half = event.duration_s / 2.0
        since_mid = time_s - (event.start_s + half)
        if abs(since_mid) > half + MAX_PASS_S:
            continue
        line = target[:2] - lens[:2]
        distance = float(np.hypot(*line))
        if distance < 1e-6:
            continue
        ahead = line / distance
        across = np.array([-ahead[1], ahead[0]])
        nearest = radius + LENS_CLEARANCE_M
        depth = min(max(0.5 * distance, nearest), max(nearest, distance - target_radius_m - TARGET_CLEARANCE_M))
        cover = radius - target_radius_m * depth / max(distance - target_radius_m, 1e-3)
        cover = max(cover, MIN_COVER_FRACTION * radius)
        offset = event.side * cover * since_mid / half
        if abs(offset) > depth * math.tan(half_hfov_rad) + radius:
            continue  # outside the camera's view on its way in or out
        x, y = lens[:2] + depth * ahead + offset * across
        return np.array([x, y, height_m / 2.0])
    return None


def parked_centre(lens, optical_axis) -> np.ndarray:
    """Where an inactive occluder waits: far behind the camera and deep below the ground, so it is
    neither drawn (the ground is always nearer) nor casts a shadow, and is almost always behind the
    image plane (cheap to skip)."""
    return np.asarray(lens, dtype=float) - PARK_DISTANCE_M * np.asarray(optical_axis, dtype=float) \
        + np.array([0.0, 0.0, -2.0 * PARK_DISTANCE_M])
