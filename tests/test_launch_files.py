"""Static checks of launch/*.launch.py (launch/launch_ros are not installable here, so nothing is imported):
executables are this package's console scripts, parameter files exist and name only declared
parameters of the node that loads them, every launch argument but the required ones has a default, and
only launch API that exists from Humble to Kilted is used."""
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


# Arguments a user must give: launch refuses to start without them only when they have no default at all.
REQUIRED_ARGUMENTS = {"replay.launch.py": {"bag"}}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_only_required_arguments_lack_a_default_and_every_use_is_declared(path):
    tree = ast.parse(path.read_text())
    declared, used, required = set(), set(), set()
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        func = getattr(call.func, "id", None)
        if func == "DeclareLaunchArgument":
            keywords = {k.arg for k in call.keywords}
            name = ast.literal_eval(call.args[0])
            declared.add(name)
            if "default_value" not in keywords and len(call.args) < 2:
                required.add(name)
        elif func in ("LaunchConfiguration", "LaunchConfigurationEquals"):
            used.add(ast.literal_eval(call.args[0]))
    assert used <= declared, f"{path.name}: undeclared arguments {sorted(used - declared)}"
    assert required == REQUIRED_ARGUMENTS.get(path.name, set()), f"{path.name}: arguments without a default"


# What each launch file may import: launch API present in Humble, Jazzy and Kilted alike.
# LaunchConfigurationEquals / LaunchConfigurationNotEquals are deprecated since Iron; EqualsSubstitution
# only exists from Iron on (Humble lacks it), so neither is used: no launch file needs an equality test.
PORTABLE_LAUNCH_API = {
    "launch": {"LaunchDescription"},
    "launch.actions": {"DeclareLaunchArgument", "GroupAction", "IncludeLaunchDescription"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.substitutions": {"LaunchConfiguration", "PythonExpression", "TextSubstitution"},
    "launch_ros.actions": {"Node"},
    "launch_ros.parameter_descriptions": {"ParameterValue"},
}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_use_only_launch_api_of_every_supported_distro(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("launch", "launch_ros"):
            names = {alias.name for alias in node.names}
            unknown = names - PORTABLE_LAUNCH_API.get(node.module, set())
            assert not unknown, f"{path.name}: {node.module}.{sorted(unknown)} is not available on every distro"


def test_deploy_launch_offers_params_file_record_and_camera_topic():
    source = (REPO / "launch" / "deploy.launch.py").read_text()
    tree = ast.parse(source)
    arguments = {ast.literal_eval(call.args[0]) for call in ast.walk(tree) if isinstance(call, ast.Call)
                 and getattr(call.func, "id", None) == "DeclareLaunchArgument"}
    assert {"params_file", "record", "bag", "camera_topic"} <= arguments
    # Every node gets the site file last (after its packaged YAML and the inline launch arguments).
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "Node":
            parameters = next(k.value for k in call.keywords if k.arg == "parameters")
            assert ast.unparse(parameters.elts[-1]) == "site", ast.unparse(call)
    # The default site file is valid: sections per deploy node (or /**), naming only declared parameters.
    scripts = setup_nodes()
    names = {node_name(scripts[node["executable"]]): scripts[node["executable"]]
             for node in launch_nodes(REPO / "launch" / "deploy.launch.py")}
    overrides = yaml.safe_load((REPO / "config" / "deploy_overrides.yaml").read_text())
    for section, content in overrides.items():
        assert section == "/**" or section in names, section
        targets = names.values() if section == "/**" else [names[section]]
        for module in targets:
            unknown = set(content["ros__parameters"]) - declared_parameters(module)
            assert not unknown, f"deploy_overrides.yaml [{section}] sets {sorted(unknown)} that {module} lacks"


def test_sim_launch_offers_no_vehicle_backend_without_a_camera():
    """sim.launch.py runs the sim only: a MAVLink vehicle needs a camera source, which deploy.launch.py has."""
    tree = ast.parse((REPO / "launch" / "sim.launch.py").read_text())
    executables = {ast.literal_eval(k.value) for call in ast.walk(tree) if isinstance(call, ast.Call)
                   and getattr(call.func, "id", None) == "Node" for k in call.keywords if k.arg == "executable"}
    assert "sim_node" in executables and "mavlink_bridge_node" not in executables


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
        "launch.substitutions": ["LaunchConfiguration", "PythonExpression", "TextSubstitution"],
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
        default = argument.kwargs.get("default_value", "")
        if default.endswith(".yaml"):  # e.g. deploy's params_file: a real file in the package
            assert Path(default).is_file(), default
