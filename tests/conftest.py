"""Test-wide settings.

DDS isolation: every test run gets its own ROS_DOMAIN_ID and discovery stays on
localhost, so parallel runs (and other sessions on the machine) never cross-talk.
These must be set before rclpy is imported anywhere.
"""
import os
import random
import sys
from pathlib import Path

os.environ["ROS_DOMAIN_ID"] = os.environ.get("LIQUID_TEST_DOMAIN_ID") or str(random.SystemRandom().randint(1, 100))
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
# Headless plotting everywhere.
os.environ.setdefault("MPLBACKEND", "Agg")

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # tests run from a checkout even without an install
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT
