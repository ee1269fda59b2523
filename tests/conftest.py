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


@pytest.fixture
def harness():
    """An rclpy context + executor for nodes under test, torn down after the test (node_helpers.Harness)."""
    from node_helpers import Harness

    h = Harness()
    yield h
    h.close()


@pytest.fixture(scope="module")
def tiny_node_model(tmp_path_factory):
    """A random perception + dense CfC policy model file with 8 features (node plumbing, not flying)."""
    from node_helpers import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("node_model") / "tiny.safetensors")


@pytest.fixture()
def tiny_suite(tmp_path):
    """A suite file `tiny_suite.yaml`: one train scenario, two episodes."""
    path = tmp_path / "tiny_suite.yaml"
    path.write_text("description: one short scenario for tests\n"
                    "scenarios:\n  - {scenario: train_fly_to_target, episodes: 2}\n")
    return path
