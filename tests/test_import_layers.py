"""The package's import graph (parsed with ast, nothing imported): no module imports from a higher layer
(core -> nodes -> commands -> CLI, see liquid_control/__init__.py) and module-level imports form no loop."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "liquid_control"

# Layer of each top-level package/module of liquid_control; a module may import from its own layer or below.
LAYERS = {
    "util": 0, "config": 0,
    "models": 1, "simulation": 1, "bags": 1, "deploy": 1, "interfaces": 1,
    "inference": 2,
    "evaluation": 3,
    "learning": 4, "analysis": 4,
    "nodes": 5,
    "commands": 6,
    "cli": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()


def is_module(name: str) -> bool:
    return is_package(name) or (PACKAGE.parent / (name.replace(".", "/") + ".py")).is_file()


def imports(path: Path) -> list[tuple[str, bool]]:
    """(imported liquid_control module, imported at module level) for every import in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        found += [(t, id(node) in top_level) for t in targets if t == "liquid_control" or
                  t.startswith("liquid_control.")]
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:
        return 0  # the root package: __version__ only
    assert parts[1] in LAYERS, f"{module}: new top-level module; give it a layer in LAYERS (and the package docstring)"
    return LAYERS[parts[1]]


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        for imported, _ in imports(path):
            if layer(imported) > layer(importer):
                upward.append(f"{importer} (layer {layer(importer)}) imports {imported} (layer {layer(imported)})")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_module_level_imports_form_no_loop():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph[module_name(path)] = {m for m, top in imports(path) if top and m != module_name(path)}
    # Importing a.b.c also runs a/__init__ and a/b/__init__ (except the importer's own packages: those
    # are already being imported when it runs).
    for node, targets in graph.items():
        for target in list(targets):
            parts = target.split(".")
            prefixes = (".".join(parts[:i]) for i in range(1, len(parts)))
            targets.update(p for p in prefixes if not (node + ".").startswith(p + "."))
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []
    loops = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                loops.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not loops, "import loops:\n" + "\n".join(loops)


def test_the_checker_sees_relative_function_local_and_upward_imports(tmp_path):
    """The parser itself: a relative import resolves, a function-local import counts, layers order."""
    found = dict(imports(PACKAGE / "models" / "policy.py"))
    assert found["liquid_control.models.cfc"] is True
    local = dict(imports(PACKAGE / "evaluation" / "closed_loop.py"))
    assert local["liquid_control.inference.runtime"] is False  # imported inside a function
    assert layer("liquid_control.commands.demo") > layer("liquid_control.nodes.graph") > \
        layer("liquid_control.inference.loop") > layer("liquid_control.util.paths")
