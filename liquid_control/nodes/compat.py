"""What differs between the rclpy of Humble, Jazzy and Kilted, detected instead of assumed.

Companion computers run the ROS their OS ships (JetPack 6 / Ubuntu 22.04: Humble; Ubuntu 24.04:
Jazzy). Two modules the nodes use are not in every rclpy:

- `rclpy.experimental.EventsExecutor` (the policy node's default executor) exists from Kilted on;
  without it the node runs on the SingleThreadedExecutor and says so (higher timer lateness,
  docs/BENCHMARKS.md "Node loop").
- `rclpy.event_handler` (SubscriptionEventCallbacks) exists from Iron on; Humble has the same
  class in `rclpy.qos_event` (deprecated, with a warning, from Iron on, so it is tried second).

Each lookup returns what it found plus a warning text ("" when nothing is missing); the caller
logs the warning with its node's logger.
"""
from __future__ import annotations

import importlib
import warnings
from typing import Any, Optional


def _import(module: str, name: str) -> Optional[Any]:
    """`module.name`, or None when the module or the name is missing in this rclpy."""
    try:
        with warnings.catch_warnings():  # qos_event's own deprecation notice: we already prefer event_handler
            warnings.simplefilter("ignore")
            return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def events_executor_class() -> tuple[Optional[type], str]:
    """(rclpy's EventsExecutor class or None, warning when it is missing)."""
    found = _import("rclpy.experimental", "EventsExecutor")
    if found is None:
        return None, ("executor 'events' needs rclpy.experimental.EventsExecutor (ROS 2 Kilted and later), "
                      "which this rclpy lacks: using the single-threaded executor instead")
    return found, ""


def subscription_event_callbacks_class() -> tuple[Optional[type], str]:
    """(SubscriptionEventCallbacks from rclpy.event_handler (Iron+) or rclpy.qos_event (Humble), or None,
    warning when neither has it)."""
    for module in ("rclpy.event_handler", "rclpy.qos_event"):
        found = _import(module, "SubscriptionEventCallbacks")
        if found is not None:
            return found, ""
    return None, ("neither rclpy.event_handler nor rclpy.qos_event offers SubscriptionEventCallbacks: "
                  "rclpy's own 'incompatible QoS' warnings will show while subscriptions follow their publishers")
