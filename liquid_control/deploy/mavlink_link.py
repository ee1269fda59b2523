"""MAVLink link to a PX4 or ArduPilot flight controller (pymavlink, no ROS).

What goes out:
- our own HEARTBEAT, as an onboard controller (MAV_TYPE_ONBOARD_CONTROLLER,
  MAV_AUTOPILOT_INVALID, component MAV_COMP_ID_ONBOARD_COMPUTER = 191 by default);
- velocity setpoints: SET_POSITION_TARGET_LOCAL_NED in MAV_FRAME_BODY_NED (8) with
  type_mask 0x05C7 = 1479 (use vx, vy, vz and yaw rate; ignore position,
  acceleration and yaw), converted from our heading-frame FLU to FRD: PX4 and ArduPilot
  fly frame 8 velocities in the heading frame (body axes turned by yaw only, not tilted);
- arm/disarm and mode changes (COMMAND_LONG), and only when the configuration
  allows them: `send_arm` / `send_mode` raise `CommandNotAllowed` otherwise.

What comes in: the vehicle's HEARTBEAT (mode name decoded with pymavlink's
PX4 / ArduPilot mode maps, armed flag from base_mode), COMMAND_ACK, and message
counters for link health.

Times are float seconds passed in by the caller (ROS time in the node, a fake
clock in tests). Facts used here are listed in DESIGN.md "Facts for the deploy
path" and come from the MAVLink common message set (mavlink.io/en/messages/common.html).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pymavlink import mavutil

from liquid_control.deploy.vehicle_state import Attitude, BatteryReading, LocalPosition, battery_reading

mavlink = mavutil.mavlink

MAV_FRAME_BODY_NED = 8
# Bits set = fields ignored: position x/y/z (0-2), acceleration (6-8), yaw (10).
# Left clear: velocity (3-5) and yaw rate (11); bit 9 (force) clear.
VELOCITY_YAW_RATE_TYPE_MASK = 0x05C7
MAV_COMP_ID_ONBOARD_COMPUTER = 191
MAV_COMP_ID_AUTOPILOT1 = 1

# Failsafe action / operator request -> mode name per autopilot family (pymavlink's names).
_MODE_NAMES = {
    "px4": {"hover": "LOITER", "land": "LAND", "return": "RTL", "offboard": "OFFBOARD"},
    "ardupilot": {"hover": "LOITER", "land": "LAND", "return": "RTL", "offboard": "GUIDED"},
}


def offboard_mode(vehicle: "VehicleState") -> bool | None:
    """Whether the vehicle is in the mode the bridge steers in (PX4 OFFBOARD, ArduPilot GUIDED); None when its
    family is unknown (the failsafe then treats it as possibly steered)."""
    names = _MODE_NAMES.get(vehicle.family)
    return None if names is None else vehicle.mode == names["offboard"]


class MavlinkLinkError(RuntimeError):
    """The link cannot be opened or used (bad connection string, missing device, ...)."""


class CommandNotAllowed(PermissionError):
    """An arm or mode command was attempted while the configuration forbids it."""


@dataclass(frozen=True)
class VelocityCommand:
    """Velocity command in the heading frame, FLU axes (REP-103 axes turned by yaw only): m/s forward/left/up,
    yaw rate rad/s CCW."""

    vx: float = 0.0
    vy: float = 0.0
    vz: float = 0.0
    yaw_rate: float = 0.0

    def is_finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.vx, self.vy, self.vz, self.yaw_rate))


HOVER = VelocityCommand()


def flu_to_frd(cmd: VelocityCommand) -> tuple[float, float, float, float]:
    """(vx, vy, vz, yaw_rate) in body FRD: forward, right, down, yaw rate clockwise.

    FLU and FRD share the x axis and differ by a rotation of pi about it, so y, z
    and the rate about z change sign.
    """
    return cmd.vx, -cmd.vy, -cmd.vz, -cmd.yaw_rate


@dataclass(frozen=True)
class ConnectionSpec:
    """A parsed connection string: kind is udpin, udpout, tcp, tcpin or serial."""

    kind: str
    address: str  # "host:port" or a serial device path
    baud: int

    def pymavlink_device(self) -> str:
        return self.address if self.kind == "serial" else f"{self.kind}:{self.address}"


def _parse_host_port(text: str, original: str, allow_port_zero: bool) -> str:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"MAVLink connection {original!r}: expected HOST:PORT after the scheme")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"MAVLink connection {original!r}: port {port_text!r} is not a number") from None
    lowest = 0 if allow_port_zero else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"MAVLink connection {original!r}: port {port} outside {lowest}..65535")
    return f"{host}:{port}"


def parse_connection(text: str, baud: int = 921600) -> ConnectionSpec:
    """Parse a connection string.

    Accepted forms: `udpin:HOST:PORT` (listen; `udp:` is an alias), `udpout:HOST:PORT`
    (send to), `tcp:HOST:PORT` (connect), `tcpin:HOST:PORT` (listen),
    `serial:/dev/ttyTHS1[:BAUD]`, or a bare device path (`/dev/ttyACM0`, `COM3`)
    using `baud`. Port 0 (any free port) is allowed for the listening forms.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("MAVLink connection string is empty")
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if sep and scheme in ("udp", "udpin", "udpout", "tcp", "tcpin"):
        kind = "udpin" if scheme == "udp" else scheme
        return ConnectionSpec(kind, _parse_host_port(rest, text, allow_port_zero=kind.endswith("in")), baud)
    if sep and scheme == "serial":
        device, colon, baud_text = rest.rpartition(":")
        if colon and baud_text.isdigit():
            baud = int(baud_text)
        else:
            device = rest
        if not device:
            raise ValueError(f"MAVLink connection {text!r}: missing serial device")
        text = device
    elif not (text.startswith("/dev/") or text.upper().startswith("COM")):
        raise ValueError(
            f"MAVLink connection {text!r} not understood: use udpin:HOST:PORT, udpout:HOST:PORT, "
            "tcp:HOST:PORT, tcpin:HOST:PORT, serial:/dev/DEVICE[:BAUD] or a device path")
    if baud <= 0:
        raise ValueError(f"MAVLink connection {text!r}: baud rate must be positive, got {baud}")
    return ConnectionSpec("serial", text, baud)


@dataclass
class MavlinkLinkConfig:
    """How to reach the flight controller and what the link may send."""

    connection: str = "udpin:0.0.0.0:14540"
    baud: int = 921600
    source_system: int = 1  # same system as the vehicle, as companion computers usually are
    source_component: int = MAV_COMP_ID_ONBOARD_COMPUTER
    target_system: int = 0  # 0: lock on the first autopilot heartbeat heard
    target_component: int = MAV_COMP_ID_AUTOPILOT1
    heartbeat_timeout_s: float = 3.0  # vehicle heartbeats are 1 Hz; 3 missed = link lost
    allow_arming: bool = False
    allow_mode_change: bool = False

    def __post_init__(self) -> None:
        for name in ("source_system", "target_system"):
            value = getattr(self, name)
            if not (0 if name == "target_system" else 1) <= value <= 255:
                raise ValueError(f"{name} must be in 1..255 (target_system may be 0 = auto), got {value}")
        for name in ("source_component", "target_component"):
            if not 0 <= getattr(self, name) <= 255:
                raise ValueError(f"{name} must be in 0..255, got {getattr(self, name)}")
        if not self.heartbeat_timeout_s > 0.0:
            raise ValueError(f"heartbeat_timeout_s must be positive, got {self.heartbeat_timeout_s}")
        parse_connection(self.connection, self.baud)  # fail early on a bad string


@dataclass
class VehicleState:
    """What the vehicle's heartbeats said last; system_id 0 until one arrives."""

    system_id: int = 0
    component_id: int = 0
    autopilot: int = 0
    vehicle_type: int = 0
    family: str = "unknown"  # px4, ardupilot or other
    mode: str = "UNKNOWN"
    armed: bool = False
    system_status: int = 0
    heartbeats: int = 0
    last_heartbeat_s: float | None = None


@dataclass(frozen=True)
class LinkHealth:
    connected: bool  # a vehicle heartbeat within heartbeat_timeout_s
    heartbeat_age_s: float  # infinity before the first heartbeat
    heartbeats: int
    messages_received: int
    receive_errors: int
    setpoints_sent: int


@dataclass(frozen=True)
class TimeSync:
    """One TIMESYNC round trip: rtt_s, and the FC clock minus ours (offset_s), both in seconds."""

    rtt_s: float
    offset_s: float
    received_s: float


@dataclass(frozen=True)
class CommandAck:
    command: int
    result: int
    received_s: float


def _family(autopilot: int) -> str:
    if autopilot == mavlink.MAV_AUTOPILOT_PX4:
        return "px4"
    if autopilot == mavlink.MAV_AUTOPILOT_ARDUPILOTMEGA:
        return "ardupilot"
    return "other"


class MavlinkLink:
    """One MAVLink connection; call `poll` often (every control cycle) — it never blocks."""

    def __init__(self, config: MavlinkLinkConfig) -> None:
        self.config = config
        self.spec = parse_connection(config.connection, config.baud)
        self.vehicle = VehicleState()
        self.last_ack: CommandAck | None = None
        self.setpoints_sent = 0
        self.messages_received = 0
        # The vehicle's own estimate (vehicle_state converts it to ROS frames); updates: kinds new since
        # take_updates() ("position", "attitude", "battery").
        self.local_position: LocalPosition | None = None
        self.attitude: Attitude | None = None
        self.battery: BatteryReading | None = None
        self.timesync: TimeSync | None = None
        self._timesync_sent: dict[int, float] = {}  # our ts1 (ns) -> when sent
        self.updates: set[str] = set()
        self._conn = None
        self._boot_monotonic = time.monotonic()

    # -- connection ---------------------------------------------------------------------------
    def open(self) -> None:
        try:
            self._conn = mavutil.mavlink_connection(
                self.spec.pymavlink_device(), baud=self.spec.baud, source_system=self.config.source_system,
                source_component=self.config.source_component, autoreconnect=True)
        except ModuleNotFoundError as exc:  # pyserial missing
            raise MavlinkLinkError(f"cannot open {self.config.connection!r}: {exc} (pip install pyserial)") from exc
        except (OSError, ValueError) as exc:
            raise MavlinkLinkError(f"cannot open MAVLink connection {self.config.connection!r}: {exc}") from exc
        self._boot_monotonic = time.monotonic()

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    def local_port(self) -> int | None:
        """Bound local port of a UDP/TCP link (useful with port 0); None for serial."""
        sock = getattr(self._conn, "port", None)
        return sock.getsockname()[1] if hasattr(sock, "getsockname") else None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _send(self, message: str, *fields) -> None:
        """Encode and write one message, e.g. _send('heartbeat', ...); I/O errors become MavlinkLinkError."""
        if self._conn is None:
            raise MavlinkLinkError("MAVLink link is not open (call open() first)")
        try:
            getattr(self._conn.mav, f"{message}_send")(*fields)
        except OSError as exc:  # serial unplugged, TCP peer gone
            raise MavlinkLinkError(f"MAVLink send failed on {self.config.connection!r}: {exc}") from exc

    # -- receiving ----------------------------------------------------------------------------
    def poll(self, now_s: float, max_messages: int = 500) -> int:
        """Read every pending message; returns how many vehicle heartbeats arrived."""
        if self._conn is None:
            raise MavlinkLinkError("MAVLink link is not open (call open() first)")
        heartbeats = 0
        for _ in range(max_messages):
            try:
                msg = self._conn.recv_msg()
            except OSError as exc:  # serial unplugged, TCP reset: report, keep running (autoreconnect)
                raise MavlinkLinkError(f"MAVLink receive failed on {self.config.connection!r}: {exc}") from exc
            if msg is None:
                break
            kind = msg.get_type()
            if kind == "BAD_DATA":
                continue
            self.messages_received += 1
            if kind == "HEARTBEAT" and self._is_vehicle_heartbeat(msg):
                self._on_heartbeat(msg, now_s)
                heartbeats += 1
            elif msg.get_srcSystem() != self.vehicle.system_id or self.vehicle.system_id == 0:
                continue  # state from other systems (a GCS, a second vehicle) is not ours
            elif kind == "COMMAND_ACK":
                self.last_ack = CommandAck(msg.command, msg.result, now_s)
            elif kind in ("LOCAL_POSITION_NED", "ATTITUDE", "BATTERY_STATUS", "TIMESYNC"):
                self._on_state(kind, msg, now_s)
        return heartbeats

    def _on_state(self, kind: str, msg, now_s: float) -> None:
        if kind == "LOCAL_POSITION_NED":
            self.local_position = LocalPosition((msg.x, msg.y, msg.z), (msg.vx, msg.vy, msg.vz), now_s)
            self.updates.add("position")
        elif kind == "ATTITUDE":
            self.attitude = Attitude(msg.roll, msg.pitch, msg.yaw, (msg.rollspeed, msg.pitchspeed, msg.yawspeed),
                                     now_s)
            self.updates.add("attitude")
        elif kind == "BATTERY_STATUS":
            self.battery = battery_reading(msg.voltages, msg.current_battery, msg.battery_remaining, msg.temperature,
                                           now_s, msg.id, getattr(msg, "voltages_ext", ()) or ())
            self.updates.add("battery")
        elif kind == "TIMESYNC" and msg.tc1 != 0:  # an answer: tc1 = the FC's clock, ts1 = our request's
            sent = self._timesync_sent.pop(msg.ts1, None)
            if sent is not None:
                rtt = time.monotonic() - sent
                self.timesync = TimeSync(rtt, (msg.tc1 - msg.ts1) * 1e-9 - rtt / 2, now_s)

    def take_updates(self) -> set[str]:
        """The kinds of vehicle state that arrived since the previous call."""
        updates, self.updates = self.updates, set()
        return updates

    def _is_vehicle_heartbeat(self, msg) -> bool:
        if msg.autopilot == mavlink.MAV_AUTOPILOT_INVALID:  # GCS, cameras, other companions
            return False
        wanted = self.config.target_system or self.vehicle.system_id
        return wanted == 0 or msg.get_srcSystem() == wanted

    def _on_heartbeat(self, msg, now_s: float) -> None:
        v = self.vehicle
        v.system_id, v.component_id = msg.get_srcSystem(), msg.get_srcComponent()
        v.autopilot, v.vehicle_type = msg.autopilot, msg.type
        v.family = _family(msg.autopilot)
        v.mode = mavutil.mode_string_v10(msg)
        v.armed = bool(msg.base_mode & mavlink.MAV_MODE_FLAG_SAFETY_ARMED)
        v.system_status = msg.system_status
        v.heartbeats += 1
        v.last_heartbeat_s = now_s

    def health(self, now_s: float) -> LinkHealth:
        last = self.vehicle.last_heartbeat_s
        age = math.inf if last is None else max(0.0, now_s - last)
        errors = self._conn.mav.total_receive_errors if self._conn is not None else 0
        return LinkHealth(age <= self.config.heartbeat_timeout_s, age, self.vehicle.heartbeats,
                          self.messages_received, errors, self.setpoints_sent)

    # -- sending ------------------------------------------------------------------------------
    def _time_boot_ms(self) -> int:
        return int((time.monotonic() - self._boot_monotonic) * 1000) & 0xFFFFFFFF

    def send_heartbeat(self) -> None:
        self._send("heartbeat", mavlink.MAV_TYPE_ONBOARD_CONTROLLER, mavlink.MAV_AUTOPILOT_INVALID,
                   0, 0, mavlink.MAV_STATE_ACTIVE)

    def send_timesync(self) -> None:
        """A TIMESYNC request (tc1 = 0, ts1 = our monotonic clock in ns); the answer sets `timesync`."""
        ts1 = time.monotonic_ns()
        self._timesync_sent = {k: v for k, v in self._timesync_sent.items() if ts1 - k < 10_000_000_000}
        self._timesync_sent[ts1] = time.monotonic()
        self._send("timesync", 0, ts1)

    def _target(self) -> tuple[int, int]:
        system = self.config.target_system or self.vehicle.system_id
        if system == 0:
            raise MavlinkLinkError("no vehicle heard yet: cannot address a command")
        return system, self.config.target_component

    def send_velocity(self, cmd: VelocityCommand) -> None:
        """Stream one heading-frame velocity + yaw-rate setpoint (cmd in FLU, sent as FRD in frame 8)."""
        if not cmd.is_finite():
            raise ValueError(f"refusing to send a non-finite velocity setpoint {cmd}")
        vx, vy, vz, yaw_rate = flu_to_frd(cmd)
        system, component = self._target()
        self._send(
            "set_position_target_local_ned",
            self._time_boot_ms(), system, component, MAV_FRAME_BODY_NED, VELOCITY_YAW_RATE_TYPE_MASK,
            0.0, 0.0, 0.0, vx, vy, vz, 0.0, 0.0, 0.0, 0.0, yaw_rate)
        self.setpoints_sent += 1

    def send_arm(self, arm: bool) -> None:
        """MAV_CMD_COMPONENT_ARM_DISARM; raises CommandNotAllowed unless allow_arming."""
        if not self.config.allow_arming:
            raise CommandNotAllowed("arming/disarming is disabled (allow_arming: false)")
        system, component = self._target()
        self._send("command_long", system, component, mavlink.MAV_CMD_COMPONENT_ARM_DISARM, 0,
                   1.0 if arm else 0.0, 0, 0, 0, 0, 0, 0)

    def mode_name(self, purpose: str) -> str:
        """Mode name for 'hover', 'land', 'return' or 'offboard' on the connected autopilot."""
        names = _MODE_NAMES.get(self.vehicle.family)
        if names is None:
            raise MavlinkLinkError(f"mode changes need a PX4 or ArduPilot vehicle, heard: {self.vehicle.family}")
        if purpose not in names:
            raise ValueError(f"unknown mode purpose {purpose!r}; expected one of {sorted(names)}")
        return names[purpose]

    def send_mode(self, mode: str) -> None:
        """MAV_CMD_DO_SET_MODE by name (e.g. 'OFFBOARD', 'GUIDED', 'LAND'); needs allow_mode_change."""
        if not self.config.allow_mode_change:
            raise CommandNotAllowed("mode changes are disabled (allow_mode_change: false)")
        family = self.vehicle.family
        if family == "px4":
            if mode not in mavutil.px4_map:
                raise ValueError(f"unknown PX4 mode {mode!r}; known: {sorted(mavutil.px4_map)}")
            base_mode, main_mode, sub_mode = mavutil.px4_map[mode]
            params = (float(base_mode), float(main_mode), float(sub_mode))
        elif family == "ardupilot":
            mapping = mavutil.mode_mapping_byname(self.vehicle.vehicle_type) or {}
            if mode not in mapping:
                raise ValueError(f"unknown ArduPilot mode {mode!r} for vehicle type {self.vehicle.vehicle_type}")
            params = (float(mavlink.MAV_MODE_FLAG_CUSTOM_MODE_ENABLED), float(mapping[mode]), 0.0)
        else:
            raise MavlinkLinkError(f"mode changes need a PX4 or ArduPilot vehicle, heard: {family}")
        system, component = self._target()
        self._send("command_long", system, component, mavlink.MAV_CMD_DO_SET_MODE, 0, *params, 0, 0, 0, 0)
