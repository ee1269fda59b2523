"""Static checks of launch/*.launch.py (launch/launch_ros are not installable here, so nothing is imported):
executables are this package's console scripts, parameter files exist and name only declared
parameters of the node that loads them, and every launch argument has a default."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
ALWAYS_DECLARED = {"use_sim_time"}  # rclpy declares it on every node


def setup_nodes() -> dict[str, str]:
    """console script -> module, from the NODES dict literal in setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NODES" for t in node.targets):
            nodes = ast.literal_eval(node.value)
            return {name: target.split(":")[0] for name, target in nodes.items()}
    raise AssertionError("setup.py has no NODES dict")


def node_source(module: str) -> ast.Module:
    return ast.parse((REPO / Path(*module.split("."))).with_suffix(".py").read_text())


def declared_parameters(module: str) -> set[str]:
    """Names a node declares: its module-level PARAMETERS specs, plus ParamSpec("name", ...),
    string_list_parameter(self, "name", ...) and declare_parameter("name", ...) calls in its source."""
    import importlib

    names = set(ALWAYS_DECLARED)
    names |= {spec.name for spec in getattr(importlib.import_module(module), "PARAMETERS", [])}
    for node in ast.walk(node_source(module)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        position = {"ParamSpec": 0, "declare_parameter": 0, "string_list_parameter": 1}.get(func)
        if position is not None and len(node.args) > position and isinstance(node.args[position], ast.Constant):
            names.add(node.args[position].value)
    return names


def node_name(module: str) -> str:
    """The name passed to Node.__init__ via super().__init__("name", ...)."""
    for node in ast.walk(node_source(module)):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__init__"
                and node.args and isinstance(node.args[0], ast.Constant)):
            return node.args[0].value
    raise AssertionError(f"{module}: no super().__init__('name') found")


def launch_nodes(path: Path) -> list[dict]:
    """Every Node(...) call: executable, name, YAML files and inline parameter keys."""
    found = []
    for call in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node"):
            continue
        kwargs = {k.arg: k.value for k in call.keywords}
        yamls, inline = [], []
        if "parameters" in kwargs:
            for item in ast.walk(kwargs["parameters"]):
                if isinstance(item, ast.Constant) and isinstance(item.value, str) and item.value.endswith(".yaml"):
                    yamls.append(item.value)
                if isinstance(item, ast.Dict):
                    inline += [k.value for k in item.keys if isinstance(k, ast.Constant)]
        found.append({"executable": ast.literal_eval(kwargs["executable"]),
                      "package": ast.literal_eval(kwargs["package"]),
                      "name": ast.literal_eval(kwargs["name"]) if "name" in kwargs else None,
                      "yamls": yamls, "inline": inline})
    return found


def test_the_three_launch_files_exist():
    assert {p.name for p in LAUNCH_FILES} == {"sim.launch.py", "deploy.launch.py", "replay.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_parses_and_defines_generate_launch_description(path):
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_executable_is_a_console_script_of_this_package(path):
    scripts = setup_nodes()
    nodes = launch_nodes(path)
    assert nodes, f"{path.name} starts no nodes"
    for node in nodes:
        assert node["package"] == "liquid_control"
        assert node["executable"] in scripts, f"{path.name}: {node['executable']} is not in setup.py NODES"
        module = scripts[node["executable"]]
        assert (REPO / Path(*module.split("."))).with_suffix(".py").is_file()
        if node["name"] is not None:
            assert node["name"] == node_name(module), "launch name must match the YAML's node key"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_parameter_files_exist_and_name_only_declared_parameters(path):
    scripts = setup_nodes()
    for node in launch_nodes(path):
        module = scripts[node["executable"]]
        declared = declared_parameters(module)
        assert node["yamls"], f"{path.name}: {node['executable']} gets no parameter file"
        for name in node["yamls"]:
            yaml_path = REPO / "config" / name
            assert yaml_path.is_file(), f"{path.name} names config/{name}, which does not exist"
            data = yaml.safe_load(yaml_path.read_text())
            assert list(data) == [node_name(module)], f"config/{name} must hold the node {node_name(module)!r}"
            params = data[node_name(module)]["ros__parameters"]
            unknown = set(params) - declared
            assert not unknown, f"config/{name} sets parameters {module} does not declare: {sorted(unknown)}"
        unknown_inline = set(node["inline"]) - declared
        assert not unknown_inline, f"{path.name}: {module} does not declare {sorted(unknown_inline)}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_launch_argument_has_a_default_and_every_use_is_declared(path):
    tree = ast.parse(path.read_text())
    declared, used = set(), set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = getattr(call.func, "id", None)
        if func == "DeclareLaunchArgument":
            keywords = {k.arg for k in call.keywords}
            assert "default_value" in keywords or len(call.args) > 1, \
                f"{path.name}: argument {ast.unparse(call.args[0])} has no default"
            declared.add(ast.literal_eval(call.args[0]))
        elif func in ("LaunchConfiguration", "LaunchConfigurationEquals"):
            used.add(ast.literal_eval(call.args[0]))
    assert used <= declared, f"{path.name}: undeclared arguments {sorted(used - declared)}"


def test_the_checks_catch_undeclared_parameters(tmp_path):
    """The declared-name extraction is not vacuous: it knows real names and not invented ones."""
    policy = declared_parameters("liquid_control.nodes.policy_node")
    assert {"rate_hz", "watchdog_timeout_s", "model_path", "use_sim_time"} <= policy
    assert "rate" not in policy
    assert {"topics", "types", "output"} <= declared_parameters("liquid_control.nodes.recorder_node")


def test_node_configs_match_the_declarations_of_their_nodes():
    """config/{sim,perception,policy}.yaml set exactly what their node declares, and the defaults agree."""
    import importlib

    for stem, module in (("sim", "sim_node"), ("perception", "perception_node"), ("policy", "policy_node")):
        specs = importlib.import_module(f"liquid_control.nodes.{module}").PARAMETERS
        params = yaml.safe_load((REPO / "config" / f"{stem}.yaml").read_text())[stem]["ros__parameters"]
        assert set(params) == {s.name for s in specs}, stem
        for spec in specs:
            assert type(params[spec.name]) is type(spec.default), f"{stem}.{spec.name}: YAML type != declared type"
            if spec.low is not None:
                assert spec.low <= params[spec.name] <= spec.high, f"{stem}.{spec.name} out of its range"
            if spec.choices:
                assert params[spec.name] in spec.choices


class _Recorded:
    """Stand-in for every launch / launch_ros class: remembers how it was built."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


def _stub_modules() -> dict:
    import types

    modules = {}
    for name, attributes in {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "GroupAction", "IncludeLaunchDescription"],
        "launch.conditions": ["IfCondition", "UnlessCondition", "LaunchConfigurationEquals"],
        "launch.substitutions": ["LaunchConfiguration", "PythonExpression"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
        "launch_ros.parameter_descriptions": ["ParameterValue"],
        "ament_index_python": [],
    }.items():
        module = types.ModuleType(name)
        for attribute in attributes:
            setattr(module, attribute, type(attribute, (_Recorded,), {}))
        modules[name] = module
    packages = types.ModuleType("ament_index_python.packages")
    packages.get_package_share_directory = lambda package: str(REPO) if package == "liquid_control" else "/nonexistent"
    modules["ament_index_python.packages"] = packages
    return modules


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds_with_stubbed_launch_packages(path, monkeypatch):
    """Run generate_launch_description() against stand-ins: no NameError, real parameter file paths,
    every argument's default among its choices."""
    import runpy
    import sys

    for name, module in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    description = runpy.run_path(str(path))["generate_launch_description"]()
    entities = description.args[0]
    nodes = [e for e in entities if type(e).__name__ == "Node"]
    arguments = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    assert nodes and arguments
    for node in nodes:
        files = [p for p in node.kwargs["parameters"] if isinstance(p, str)]
        assert files and all(Path(f).is_file() for f in files), files
    for argument in arguments:
        choices = argument.kwargs.get("choices")
        if choices:
            assert argument.kwargs["default_value"] in choices
