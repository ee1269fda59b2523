"""The interface table (liquid_control.interfaces.topics) is the one place topic and service names live."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import yaml

from liquid_control.interfaces.topics import INTERFACES, LIVE_GRAPH_TOPICS, render_markdown

REPO = Path(__file__).resolve().parent.parent
TABLE = "liquid_control/interfaces/topics.py"
# Literals equal to a table name that are not topic or service names (file, literal): why.
NOT_INTERFACE_NAMES = {
    ("liquid_control/inference/export.py", "features"): "ONNX tensor name",
    ("liquid_control/inference/runtime.py", "features"): "ONNX tensor name",
    ("liquid_control/nodes/sim_node.py", "odom"): "TF frame id",
    ("liquid_control/bags/episode.py", "odom"): "TF frame id",
    ("liquid_control/nodes/mavlink_bridge_node.py", "odom"): "TF frame id (odom_frame_id default)",
}


def string_literals(path: Path):
    """(line, text) of every string constant in a Python file except docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_topic_and_service_names_are_written_only_in_the_table():
    # A name as written in the table or in the root namespace, also as the left side of "name:=..." (remaps, types).
    spellings = {spelling for item in INTERFACES for spelling in (item.name, item.absolute)}
    files = sorted((REPO / "liquid_control").rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    assert len(files) > 40
    stray, exempted, table_hits = [], set(), 0
    for path in files:
        relative = path.relative_to(REPO).as_posix()
        for line, text in string_literals(path):
            name = text.split(":=")[0]
            if name not in spellings:
                continue
            if relative == TABLE:
                table_hits += 1
            elif (relative, name.lstrip("/")) in NOT_INTERFACE_NAMES:
                exempted.add((relative, name.lstrip("/")))
            else:
                stray.append(f"{relative}:{line}: {text!r}")
    assert not stray, "use liquid_control.interfaces.topics instead of writing these names:\n" + "\n".join(stray)
    assert table_hits == len(INTERFACES)  # the scan does see the table's own literals
    assert exempted == set(NOT_INTERFACE_NAMES), f"stale exemptions: {set(NOT_INTERFACE_NAMES) - exempted}"


def test_the_table_is_well_formed():
    names = [item.name for item in INTERFACES]
    assert len(set(names)) == len(names)
    for item in INTERFACES:
        kind = "msg" if item.kind == "topic" else "srv"
        assert re.fullmatch(rf"[a-z][a-z0-9_]*/{kind}/[A-Z][A-Za-z0-9]+", item.type), item  # REP-144 names
        assert item.producers and item.notes, item
        assert not item.name.endswith("/") and item.absolute.startswith("/")
    assert {t.name for t in LIVE_GRAPH_TOPICS} == {"cmd_vel", "policy/live", "features", "/diagnostics"}


def test_interfaces_doc_is_the_rendered_table():
    committed = (REPO / "docs" / "INTERFACES.md").read_text()
    assert committed == render_markdown(), \
        "docs/INTERFACES.md is stale: python -c 'from liquid_control.interfaces.topics import render_markdown; " \
        "print(render_markdown(), end=\"\")' > docs/INTERFACES.md"
    for item in INTERFACES:
        assert f"| `{item.name}` | {item.kind} | `{item.type}` |" in committed


def test_recorder_config_records_table_topics_with_their_types():
    params = yaml.safe_load((REPO / "config" / "recorder.yaml").read_text())["recorder"]["ros__parameters"]
    by_name = {item.absolute: item for item in INTERFACES}
    assert set(params["topics"]) <= set(by_name)
    for entry in params["types"]:
        topic, msgtype = entry.split(":=")
        assert by_name[topic].type == msgtype


def test_commands_are_documented_in_the_heading_frame_not_the_body_frame():
    """cmd_vel is flown in the heading frame (FLU axes turned by yaw only: PX4/ArduPilot's frame 8), not the
    tilted body frame: no doc, docstring, config or launch line may call a command body FLU."""
    body = re.compile(r"body[ -](frame )?\(?flu|body-frame|body frame", re.IGNORECASE)
    command = re.compile(r"cmd_vel|command|setpoint", re.IGNORECASE)
    files = [*REPO.glob("liquid_control/**/*.py"), *REPO.glob("launch/*.py"), *REPO.glob("config/*.yaml"),
             *REPO.glob("docs/*.md"), REPO / "README.md"]
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}" for path in files
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if body.search(line) and command.search(line) and "heading" not in line.lower()
                 and "paper" not in line.lower()]
    assert not offenders, offenders
