"""Simulation speed: our DroneWorld against a baseline built the way the reference simulator works.

Prints, in one run:
  1. control steps/s at 240 Hz physics with the flight controller called every physics step, no camera;
  2. env steps/s at 30 Hz control (8 physics substeps + controller + one camera frame) for 64x48,
     128x96 and 256x144 cameras;
and the same for a baseline that does it the way gym-pybullet-drones does (four per-rotor
applyExternalForce calls + torque, numpy state vector and numpy PID per step, PyBullet's
getCameraImage TinyRenderer with segmentation and depth), plus the ratio ours/baseline and the
reference numbers recorded in DESIGN.md (measured on this machine with gym-pybullet-drones itself).

Run:  .venv/bin/python benchmarks/sim_speed.py                 (about a minute; CPU-time clock)
      .venv/bin/python benchmarks/sim_speed.py --clock wall     (wall clock: only meaningful on an idle machine)
      .venv/bin/python benchmarks/sim_speed.py --seconds 0.5    (quick look)
"""
from __future__ import annotations

import argparse
import math
import time

from pathlib import Path

import numpy as np
import pybullet as pb
import pybullet_data

from liquid_control.simulation import (CameraConfig, DroneWorld, Obstacle, QuadrotorSim, SceneConfig, SceneObject,
                                       VelocityController, load_airframe)
from liquid_control.simulation.camera import RayCastRenderer, camera_pose

# DESIGN.md, "The simulation": gym-pybullet-drones measured on this machine.
REFERENCE_CONTROL_STEPS_PER_S = 5470
REFERENCE_ENV_STEPS_PER_S = {(64, 48): 218, (128, 96): 147}  # 256x144: 81 (issue text)
REFERENCE_ENV_STEPS_PER_S[(256, 144)] = 81
RESOLUTIONS = [(64, 48), (128, 96), (256, 144)]


def benchmark_scene() -> SceneConfig:
    """A typical task scene: target, three distractors, two trees, a post."""
    return SceneConfig(
        target=SceneObject("sphere", (0.9, 0.1, 0.1), 0.5, (6.0, 0.5, 1.2), collides=False),
        distractors=(SceneObject("box", (0.1, 0.3, 0.9), (0.6, 0.6, 1.2), (5.0, -2.0, 0.6)),
                     SceneObject("cylinder", (0.9, 0.8, 0.1), (0.4, 0.4, 1.5), (8.0, 2.5, 0.75)),
                     SceneObject("sphere", (0.2, 0.8, 0.3), 0.4, (4.0, 1.5, 1.8))),
        obstacles=(Obstacle("tree", (9.0, -3.0), 4.0), Obstacle("tree", (12.0, 3.0), 5.0),
                   Obstacle("post", (3.0, -1.0), 2.0, 0.08)),
    )


CLOCK = time.thread_time  # set by --clock


def rate(fn, seconds: float, rounds: int = 5) -> float:
    """Calls of fn per second of CLOCK: the best of `rounds` rounds of seconds/rounds each, after a warm-up.

    Best-of rather than mean, and by default the thread's CPU time rather than wall time: the
    machine is shared, and other jobs only ever slow a round down. PyBullet (DIRECT mode) runs in
    the calling thread, so its time is counted.
    """
    for _ in range(3):
        fn()
    best = 0.0
    for _ in range(rounds):
        n, start = 0, CLOCK()
        while True:
            for _ in range(5):
                fn()
            n += 5
            elapsed = CLOCK() - start
            if elapsed >= seconds / rounds:
                break
        best = max(best, n / elapsed)
    return best


# ---------------------------------------------------------------------------- baseline
class ReferenceStyleSim:
    """Physics, control and camera the way the reference does them (not its code): one PyBullet call per
    rotor force, a numpy state vector built every step, a numpy position/attitude PID with Euler angles,
    and getCameraImage (TinyRenderer, RGBA + depth + segmentation) of a textured plane.urdf ground with the
    scene's primitives as PyBullet visual shapes. The reference also draws the drone's own mesh; the
    baseline does not, so it is, if anything, slightly faster than the reference."""

    def __init__(self, airframe, scene: SceneConfig | None, camera: CameraConfig | None):
        self.af = airframe
        self.client = pb.connect(pb.DIRECT)
        cid = self.client
        pb.setTimeStep(1 / 240, physicsClientId=cid)
        pb.setGravity(0, 0, -airframe.gravity_mps2, physicsClientId=cid)
        # The reference loads pybullet_data's textured plane.urdf as its ground; so does the baseline.
        pb.loadURDF(str(Path(pybullet_data.getDataPath()) / "plane.urdf"), physicsClientId=cid)
        self.drone = pb.loadURDF(str(airframe.urdf_path), (0, 0, 1), flags=pb.URDF_USE_INERTIA_FROM_FILE,
                                 physicsClientId=cid)
        if scene is not None:
            for item in scene.primitives():
                sx, sy, sz = item.size_m
                rgba = (*item.colour, 1.0)
                if item.shape == "sphere":
                    vis = pb.createVisualShape(pb.GEOM_SPHERE, radius=sx / 2, rgbaColor=rgba, physicsClientId=cid)
                elif item.shape == "box":
                    vis = pb.createVisualShape(pb.GEOM_BOX, halfExtents=(sx / 2, sy / 2, sz / 2), rgbaColor=rgba,
                                               physicsClientId=cid)
                else:
                    vis = pb.createVisualShape(pb.GEOM_CYLINDER, radius=sx / 2, length=sz, rgbaColor=rgba,
                                               physicsClientId=cid)
                pb.createMultiBody(0, -1, vis, basePosition=item.position, physicsClientId=cid)
        self.camera = camera
        if camera is not None:
            self.proj = pb.computeProjectionMatrixFOV(camera.fov_deg, camera.width / camera.height, 0.05, 100.0)
        a = airframe.rotor_offset_m
        self.rotor_positions = [np.array([a * sx, a * sy, 0.0]) for sx, sy in ((1, -1), (-1, -1), (-1, 1), (1, 1))]
        self.integral_pos = np.zeros(3)
        self.integral_rpy = np.zeros(3)
        self.last_rpy = np.zeros(3)
        self.target = np.array([0.0, 0.0, 1.0])

    def state_vector(self) -> np.ndarray:
        pos, quat = pb.getBasePositionAndOrientation(self.drone, physicsClientId=self.client)
        rpy = pb.getEulerFromQuaternion(quat)
        vel, ang = pb.getBaseVelocity(self.drone, physicsClientId=self.client)
        return np.hstack([pos, quat, rpy, vel, ang, np.zeros(4)]).reshape(20)

    def pid(self, state: np.ndarray, dt: float) -> np.ndarray:
        af = self.af
        pos, quat, rpy, vel = state[0:3], state[3:7], state[7:10], state[10:13]
        rot = np.array(pb.getMatrixFromQuaternion(quat)).reshape(3, 3)
        pos_e = self.target - pos
        vel_e = np.zeros(3) - vel
        self.integral_pos = np.clip(self.integral_pos + pos_e * dt, -2.0, 2.0)
        thrust_vec = (np.array([0.4, 0.4, 1.25]) * pos_e + np.array([0.05, 0.05, 0.05]) * self.integral_pos
                      + np.array([0.2, 0.2, 0.5]) * vel_e + np.array([0, 0, af.weight_n]))
        scalar = max(0.0, float(np.dot(thrust_vec, rot[:, 2])))
        z_des = thrust_vec / np.linalg.norm(thrust_vec)
        x_c = np.array([1.0, 0.0, 0.0])
        y_des = np.cross(z_des, x_c)
        y_des /= np.linalg.norm(y_des)
        x_des = np.cross(y_des, z_des)
        rot_des = np.vstack([x_des, y_des, z_des]).T
        rpy_des = np.array(pb.getEulerFromQuaternion(
            pb.getQuaternionFromEuler(np.array([math.atan2(rot_des[2, 1], rot_des[2, 2]), -math.asin(rot_des[2, 0]),
                                                math.atan2(rot_des[1, 0], rot_des[0, 0])]))))
        rot_e = rpy_des - rpy
        d_rpy = (rpy - self.last_rpy) / dt
        self.last_rpy = rpy.copy()
        self.integral_rpy = np.clip(self.integral_rpy + rot_e * dt, -1.0, 1.0)
        torques = np.multiply(np.array([7e-6, 7e-6, 6e-6]), rot_e) - np.multiply(np.array([2e-6, 2e-6, 1e-6]), d_rpy)
        torques = torques + 1e-7 * self.integral_rpy
        mix = np.array([[-1, -1, -1], [-1, 1, 1], [1, 1, -1], [1, -1, 1]], dtype=float)
        a4 = 4 * af.rotor_offset_m
        per_rotor = scalar / 4 + mix @ (torques / np.array([a4, a4, 4 * af.km_nm_per_rpm2 / af.kf_n_per_rpm2]))
        return np.sqrt(np.clip(per_rotor, 0.0, None) / af.kf_n_per_rpm2)

    def physics_step(self, rpm: np.ndarray) -> None:
        af, cid = self.af, self.client
        forces = np.array(rpm) ** 2 * af.kf_n_per_rpm2
        torques = np.array(rpm) ** 2 * af.km_nm_per_rpm2
        z_torque = -torques[0] + torques[1] - torques[2] + torques[3]
        for i in range(4):
            pb.applyExternalForce(self.drone, -1, forceObj=[0, 0, forces[i]], posObj=self.rotor_positions[i].tolist(),
                                  flags=pb.LINK_FRAME, physicsClientId=cid)
        pb.applyExternalTorque(self.drone, -1, torqueObj=[0, 0, z_torque], flags=pb.LINK_FRAME, physicsClientId=cid)
        pb.stepSimulation(physicsClientId=cid)

    def control_step(self) -> None:
        self.physics_step(self.pid(self.state_vector(), 1 / 240))

    def env_step(self) -> None:
        for _ in range(8):
            self.control_step()
        cam = self.camera
        pos, quat = pb.getBasePositionAndOrientation(self.drone, physicsClientId=self.client)
        rot = np.array(pb.getMatrixFromQuaternion(quat)).reshape(3, 3)
        lens, world_from_optical = camera_pose(cam, pos, rot)
        view = pb.computeViewMatrix(lens, lens + world_from_optical[:, 2], -world_from_optical[:, 1])
        _, _, rgba, depth, seg = pb.getCameraImage(cam.width, cam.height, view, self.proj,
                                                   renderer=pb.ER_TINY_RENDERER, physicsClientId=self.client)
        np.reshape(rgba, (cam.height, cam.width, 4))

    def close(self) -> None:
        pb.disconnect(self.client)


# ---------------------------------------------------------------------------- ours
def our_control_rate(airframe, seconds: float) -> tuple[float, float, float]:
    """(control steps/s, controller us/call, physics us/step) at 240 Hz, controller every step."""
    sim = QuadrotorSim(airframe)
    controller = VelocityController(airframe)
    sim.reset((0.0, 0.0, 1.0), 0.0)
    command = (0.5, 0.2, 0.0, 0.3)

    def control_step():
        sim.step(controller.compute_rpm(sim.velocity_world, sim.rotation, sim.angular_velocity_body, command, sim.dt))

    steps = rate(control_step, seconds)
    hover = [airframe.hover_rpm] * 4
    v, r, w = sim.velocity_world, sim.rotation, sim.angular_velocity_body
    controller_us = 1e6 / rate(lambda: controller.compute_rpm(v, r, w, command, sim.dt), seconds / 2)
    physics_us = 1e6 / rate(lambda: sim.step(hover), seconds / 2)
    sim.close()
    return steps, controller_us, physics_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per figure (s)")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="cpu: this thread's CPU time (robust on a shared machine); wall: perf_counter")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(f"clock: {args.clock}; best of 5 rounds, {args.seconds:.1f} s per figure")
    airframe = load_airframe("cf2x")
    scene = benchmark_scene()

    print("== control steps/s, 240 Hz physics, controller every step, no camera ==")
    ours, controller_us, physics_us = our_control_rate(airframe, args.seconds)
    baseline = ReferenceStyleSim(airframe, None, None)
    state = baseline.state_vector()
    base = rate(baseline.control_step, args.seconds)
    base_pid_us = 1e6 / rate(lambda: baseline.pid(state, 1 / 240), args.seconds / 2)
    baseline.close()
    print(f"ours      {ours:9.0f} steps/s   (controller {controller_us:5.1f} us/call, physics step {physics_us:5.1f} us)")
    print(f"baseline  {base:9.0f} steps/s   (numpy PID {base_pid_us:5.1f} us/call)")
    print(f"ratio ours/baseline {ours / base:5.2f}x   ours/DESIGN.md reference "
          f"({REFERENCE_CONTROL_STEPS_PER_S}) {ours / REFERENCE_CONTROL_STEPS_PER_S:5.2f}x")

    print("\n== env steps/s, 30 Hz control: 8 physics substeps + controller + one camera frame ==")
    print(f"{'camera':>9} {'ours':>8} {'baseline':>9} {'ratio':>6} {'DESIGN.md ref':>14} {'ours/ref':>9}"
          f" {'render ms':>10} {'TinyR no-seg ms':>16}")
    for width, height in RESOLUTIONS:
        camera = CameraConfig(width=width, height=height)
        world = DroneWorld(airframe, camera=camera, control_hz=30.0)
        world.reset(scene, (0.0, 0.0, 1.0), 0.0, seed=0)
        k = [0]

        def env_step():
            k[0] += 1
            # Wander around the start, facing the scene, so every frame sees the objects.
            world.step((0.4 * math.sin(k[0] / 15.0), 0.4 * math.cos(k[0] / 20.0), 0.0, 0.3 * math.sin(k[0] / 25.0)))
            world.render()

        ours = rate(env_step, args.seconds)
        world.close()
        renderer = RayCastRenderer(camera, scene)
        pose = (np.array([0.0, 0.0, 1.0]), np.eye(3))
        render_ms = 1e3 / rate(lambda: renderer.render(*pose), args.seconds / 2)
        baseline = ReferenceStyleSim(airframe, scene, camera)
        base = rate(baseline.env_step, args.seconds)
        # Ablation: TinyRenderer without segmentation mask (depth is always produced by getCameraImage).
        lens, wfo = camera_pose(camera, *pose)
        view = pb.computeViewMatrix(lens, lens + wfo[:, 2], -wfo[:, 1])
        tiny_ms = 1e3 / rate(lambda: pb.getCameraImage(width, height, view, baseline.proj,
                                                       renderer=pb.ER_TINY_RENDERER,
                                                       flags=pb.ER_NO_SEGMENTATION_MASK,
                                                       physicsClientId=baseline.client), args.seconds / 2)
        baseline.close()
        ref = REFERENCE_ENV_STEPS_PER_S[(width, height)]
        print(f"{width:>4}x{height:<4} {ours:8.0f} {base:9.0f} {ours / base:5.2f}x {ref:14d} {ours / ref:8.2f}x"
              f" {render_ms:10.2f} {tiny_ms:16.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
