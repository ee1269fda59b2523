"""A stand-in flight controller for tests: a separate process speaking MAVLink on UDP loopback.

Run as a script it listens on `udpin:127.0.0.1:0` (a free port chosen by the OS),
prints one JSON line `{"event": "ready", "port": N}`, then one JSON line per
message of interest it receives from the bridge:

- `setpoint`: SET_POSITION_TARGET_LOCAL_NED (frame, type_mask, vx, vy, vz, yaw_rate, targets)
- `command_long`: every COMMAND_LONG (command id and params) — arm and mode requests show up here
- `set_mode`: every SET_MODE message
- `heartbeat`: every HEARTBEAT from the bridge (type, autopilot, system and component ids)

Each line carries `t`, time.monotonic() at reception (CLOCK_MONOTONIC, shared by
the processes of one machine). Once it has heard from the bridge it sends its own
HEARTBEAT as a PX4 or ArduPilot quadrotor at `--heartbeat-hz`, answers
COMMAND_LONG arm/disarm and DO_SET_MODE with COMMAND_ACK and applies them to the
state it reports. It answers TIMESYNC requests with its clock = CLOCK_MONOTONIC +
CLOCK_OFFSET_S. Control lines on stdin: `heartbeat off` (simulate link loss),
`heartbeat on`, `mode NAME`, `arm`, `disarm`, `quit`, and vehicle state it then sends
with every heartbeat: `position X Y Z VX VY VZ` (LOCAL_POSITION_NED, m and m/s),
`attitude ROLL PITCH YAW P Q R` (ATTITUDE, rad and rad/s), `battery MV,MV,... CURRENT_CA
REMAINING_PCT` (BATTERY_STATUS).

`AutopilotProcess` runs it from a test and collects the events.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from pymavlink import mavutil

mavlink = mavutil.mavlink
AUTOPILOT_IDS = {"px4": mavlink.MAV_AUTOPILOT_PX4, "ardupilot": mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA}
DEFAULT_MODES = {"px4": "POSCTL", "ardupilot": "LOITER"}
CLOCK_OFFSET_S = 5.0  # the autopilot's TIMESYNC clock runs this far ahead of CLOCK_MONOTONIC


def _px4_custom_mode(name: str) -> int:
    _, main_mode, sub_mode = mavutil.px4_map[name]
    return (main_mode << 16) | (sub_mode << 24)


class _Autopilot:
    def __init__(self, family: str, heartbeat_hz: float, mode: str, system_id: int) -> None:
        self.family = family
        self.heartbeat_period = 1.0 / heartbeat_hz
        self.conn = mavutil.mavlink_connection("udpin:127.0.0.1:0", source_system=system_id, source_component=1)
        self.heartbeats_on = True
        self.armed = False
        self.custom_mode = 0
        self.set_mode_by_name(mode)
        self.peer_heard = False
        self.position: list[float] | None = None
        self.attitude: list[float] | None = None
        self.battery: tuple[list[int], int, int] | None = None
        self.boot = time.monotonic()

    def set_mode_by_name(self, name: str) -> None:
        if self.family == "px4":
            self.custom_mode = _px4_custom_mode(name)
        else:
            self.custom_mode = mavutil.mode_mapping_byname(mavlink.MAV_TYPE_QUADROTOR)[name]

    def emit(self, event: dict) -> None:
        print(json.dumps(event), flush=True)

    def send_heartbeat(self) -> None:
        base_mode = mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED
        if self.armed:
            base_mode |= mavlink.MAV_MODE_FLAG_SAFETY_ARMED
        state = mavlink.MAV_STATE_ACTIVE if self.armed else mavlink.MAV_STATE_STANDBY
        self.conn.mav.heartbeat_send(mavlink.MAV_TYPE_QUADROTOR, AUTOPILOT_IDS[self.family], base_mode,
                                     self.custom_mode, state)
        boot_ms = int((time.monotonic() - self.boot) * 1000)
        if self.position is not None:
            self.conn.mav.local_position_ned_send(boot_ms, *self.position)
        if self.attitude is not None:
            self.conn.mav.attitude_send(boot_ms, *self.attitude)
        if self.battery is not None:
            cells, current, remaining = self.battery
            voltages = (cells + [65535] * 10)[:10]
            self.conn.mav.battery_status_send(0, mavlink.MAV_BATTERY_FUNCTION_ALL, mavlink.MAV_BATTERY_TYPE_LIPO,
                                              2500, voltages, current, -1, -1, remaining)

    def handle(self, msg) -> None:
        kind, now = msg.get_type(), time.monotonic()
        if kind == "BAD_DATA":
            return
        self.peer_heard = True
        if kind == "SET_POSITION_TARGET_LOCAL_NED":
            self.emit({"event": "setpoint", "t": now, "frame": msg.coordinate_frame, "type_mask": msg.type_mask,
                       "vx": msg.vx, "vy": msg.vy, "vz": msg.vz, "yaw_rate": msg.yaw_rate,
                       "target_system": msg.target_system, "target_component": msg.target_component})
        elif kind == "HEARTBEAT":
            self.emit({"event": "heartbeat", "t": now, "type": msg.type, "autopilot": msg.autopilot,
                       "system": msg.get_srcSystem(), "component": msg.get_srcComponent()})
        elif kind == "TIMESYNC" and msg.tc1 == 0:
            self.conn.mav.timesync_send(time.monotonic_ns() + int(CLOCK_OFFSET_S * 1e9), msg.ts1)
            self.emit({"event": "timesync", "t": now})
        elif kind == "SET_MODE":
            self.emit({"event": "set_mode", "t": now, "base_mode": msg.base_mode, "custom_mode": msg.custom_mode})
        elif kind == "COMMAND_LONG":
            params = [msg.param1, msg.param2, msg.param3, msg.param4, msg.param5, msg.param6, msg.param7]
            self.emit({"event": "command_long", "t": now, "command": msg.command, "params": params})
            result = mavlink.MAV_RESULT_ACCEPTED
            if msg.command == mavlink.MAV_CMD_COMPONENT_ARM_DISARM:
                self.armed = msg.param1 == 1.0
            elif msg.command == mavlink.MAV_CMD_DO_SET_MODE:
                if self.family == "px4":
                    self.custom_mode = (int(msg.param2) << 16) | (int(msg.param3) << 24)
                else:
                    self.custom_mode = int(msg.param2)
            else:
                result = mavlink.MAV_RESULT_UNSUPPORTED
            self.conn.mav.command_ack_send(msg.command, result)

    def control(self, line: str) -> bool:
        words = line.split()
        if not words:
            return True
        if words[0] == "quit":
            return False
        if words[:2] == ["heartbeat", "off"]:
            self.heartbeats_on = False
        elif words[:2] == ["heartbeat", "on"]:
            self.heartbeats_on = True
        elif words[0] == "mode" and len(words) == 2:
            self.set_mode_by_name(words[1])
        elif words[0] in ("arm", "disarm"):
            self.armed = words[0] == "arm"
        elif words[0] == "position" and len(words) == 7:
            self.position = [float(w) for w in words[1:]]
        elif words[0] == "attitude" and len(words) == 7:
            self.attitude = [float(w) for w in words[1:]]
        elif words[0] == "battery" and len(words) == 4:
            self.battery = ([int(w) for w in words[1].split(",")], int(words[2]), int(words[3]))
        self.emit({"event": "control", "t": time.monotonic(), "line": line.strip()})
        return True

    def run(self) -> None:
        self.emit({"event": "ready", "port": self.conn.port.getsockname()[1]})
        next_heartbeat = time.monotonic()
        stdin_fd = sys.stdin.fileno()
        pending = b""  # raw reads: buffered readline would hide a second queued line from select()
        while True:
            readable, _, _ = select.select([self.conn.port, stdin_fd], [], [], 0.01)
            if stdin_fd in readable:
                chunk = os.read(stdin_fd, 4096)
                if not chunk:
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    if not self.control(line.decode()):
                        return
            while (msg := self.conn.recv_msg()) is not None:
                self.handle(msg)
            now = time.monotonic()
            if now >= next_heartbeat:
                next_heartbeat = now + self.heartbeat_period
                if self.heartbeats_on and self.peer_heard:  # udpin: no address to send to before that
                    self.send_heartbeat()


class AutopilotProcess:
    """Starts the test autopilot as a subprocess and collects its events (thread-safe)."""

    def __init__(self, family: str = "px4", heartbeat_hz: float = 5.0, mode: str | None = None,
                 system_id: int = 1) -> None:
        self.family = family
        command = [sys.executable, os.path.abspath(__file__), "--autopilot", family,
                   "--heartbeat-hz", str(heartbeat_hz), "--mode", mode or DEFAULT_MODES[family],
                   "--system-id", str(system_id)]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self._events: list[dict] = []
        self._lock = threading.Lock()
        ready = self._read_ready(timeout_s=15.0)
        self.port: int = ready["port"]
        self._reader = threading.Thread(target=self._read_events, daemon=True)
        self._reader.start()

    def _read_ready(self, timeout_s: float) -> dict:
        readable, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        line = self._proc.stdout.readline() if readable else ""
        if not line:
            self.close()
            raise RuntimeError("test autopilot did not start")
        return json.loads(line)

    def _read_events(self) -> None:
        for line in self._proc.stdout:
            with self._lock:
                self._events.append(json.loads(line))

    @property
    def bridge_connection(self) -> str:
        """Connection string for the bridge side."""
        return f"udpout:127.0.0.1:{self.port}"

    def events(self, kind: str | None = None, since: float = 0.0) -> list[dict]:
        with self._lock:
            return [e for e in self._events if (kind is None or e["event"] == kind) and e.get("t", 0.0) >= since]

    def wait_for(self, predicate: Callable[[list[dict]], bool], kind: str | None = None,
                 timeout_s: float = 5.0, since: float = 0.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.events(kind, since)):
                return True
            time.sleep(0.02)
        return predicate(self.events(kind, since))

    def send(self, line: str) -> None:
        self._proc.stdin.write(line + "\n")
        self._proc.stdin.flush()

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                self.send("quit")
                self._proc.wait(timeout=3.0)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(timeout=3.0)
        reader = getattr(self, "_reader", None)
        if reader is not None:
            reader.join(timeout=3.0)  # EOF after exit ends it
        for stream in (self._proc.stdin, self._proc.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def __enter__(self) -> "AutopilotProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--autopilot", choices=sorted(AUTOPILOT_IDS), default="px4")
    parser.add_argument("--heartbeat-hz", type=float, default=1.0)
    parser.add_argument("--mode", default=None)
    parser.add_argument("--system-id", type=int, default=1)
    args = parser.parse_args()
    _Autopilot(args.autopilot, args.heartbeat_hz, args.mode or DEFAULT_MODES[args.autopilot], args.system_id).run()


if __name__ == "__main__":
    main()
