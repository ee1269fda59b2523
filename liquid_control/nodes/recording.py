"""What the recorder node decides per topic, apart from the node: the QoS that serves every publisher
(rosbag2's rules), when a subscription can no longer be served, and the identity of a sample that two
subscriptions of one topic both deliver (recorded once). See nodes/recorder_node.py."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from liquid_control.bags.writer import default_qos

IGNORED_WHEN_RECORDING_ALL = ("/rosout", "/parameter_events")
# An unneeded subscription is destroyed this long (s) after the kept one has matched every
# publisher: DDS discovery is two-sided and the publisher's half can lag (> 1 s measured here).
RETIRE_AFTER_S = 2.0
# Keys of recently recorded samples kept per topic once it has had two subscriptions at a time.
DEDUPLICATION_WINDOW = 1000


def bag_qos(profile: QoSProfile) -> dict[str, Any]:
    qos = default_qos(reliability="best_effort" if profile.reliability == ReliabilityPolicy.BEST_EFFORT else "reliable",
                      depth=profile.depth,
                      durability="transient_local" if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                      else "volatile")
    if profile.history == HistoryPolicy.KEEP_ALL:
        qos["history"] = "keep_all"
    return qos


def qos_profile(reliability: ReliabilityPolicy, durability: DurabilityPolicy, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=reliability, durability=durability)


def offered_qos(publishers: list[Any], depth: int) -> QoSProfile:
    """Subscription QoS every publisher can serve (rosbag2's rule): best effort if any publisher is
    best effort, transient local only if all are (so their latched samples arrive), keep last `depth`.
    No publisher: reliable volatile."""
    best_effort = any(p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)
    latched = bool(publishers) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                       for p in publishers)
    return qos_profile(ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                       DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE, depth)


def same_qos(a: QoSProfile, b: QoSProfile) -> bool:
    return a.reliability == b.reliability and a.durability == b.durability


def describe(qos: QoSProfile) -> str:
    return f"{qos.reliability.name.lower()} {qos.durability.name.lower()}"


def sample_key(data: bytes, info: dict[str, Any]) -> tuple:
    """Identity of one published sample, the same on every subscription that receives it."""
    gid = info.get("publisher_gid")
    gid = bytes(gid.get("data", b"")) if isinstance(gid, dict) else gid
    sequence = info.get("publication_sequence_number")
    if sequence is None or not gid:  # an RMW without these: source time + size is as close as we get
        return (info.get("source_timestamp"), len(data))
    return (gid, sequence)


@dataclass
class RecordedTopic:
    """The live subscriptions of one recorded topic; the last one is kept, the others are retiring.

    provisional: pre-configured type, no publisher seen yet: reliable, until the publishers' offers
        choose.
    recent: keys of recently recorded samples (deduplication), from the first time the topic had
        two subscriptions at once; None before.
    """

    msgtype: str
    cls: Any
    subscriptions: list[tuple[QoSProfile, Any]] = field(default_factory=list)
    provisional: bool = False
    kept_matched_at: float | None = None  # monotonic time the kept subscription matched every publisher
    recent: OrderedDict | None = None

    @property
    def qos(self) -> QoSProfile:
        """QoS of the subscription that is kept."""
        return self.subscriptions[-1][0]


def unserved(have: QoSProfile, wanted: QoSProfile) -> bool:
    """True when some publisher cannot serve `have` (reliable vs best effort, latched vs volatile)."""
    reliable, best_effort = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT
    latched, volatile = DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE
    return (have.reliability == reliable and wanted.reliability == best_effort) \
        or (have.durability == latched and wanted.durability == volatile)
