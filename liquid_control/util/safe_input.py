"""Reading untrusted text safely: bounded YAML/JSON parsing and bounded reprs for error messages.

Every loader of user files (scenarios, suites, training recipes, model-file headers) goes through
here so that a hostile or broken file gives a clear `InputError` instead of a traceback or a hang:

- `short_repr(value)` / `clip(text)`: a repr of at most `limit` characters that also stops descending into
  nested or long containers, so it takes bounded time even on a YAML "billion laughs" value
  (a list of aliases to lists of aliases: ~10^9 elements reachable from a 1 KB file);
- `read_text_file(path)`: at most `max_bytes`, strict UTF-8 (a UTF-16 or binary file is refused);
- `load_yaml_text(text)`: YAML safe_load with the nesting depth, the number of aliases and the
  size the document would have with every alias expanded bounded before any Python object is built;
- `loads_json(text)`: json.loads with a nesting-depth bound (deep nesting is a RecursionError in
  the json module, which it does not turn into a JSONDecodeError).
"""
from __future__ import annotations

import json
import reprlib
from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 4 * 1024 * 1024  # our largest shipped YAML/JSON input is a few KB
MAX_DEPTH = 64  # shipped files nest at most 4 levels
MAX_ALIASES = 1000
MAX_EXPANDED_NODES = 1_000_000  # nodes in the document with every alias expanded
REPR_LIMIT = 200


class InputError(ValueError):
    """An input file or text that cannot be read or parsed within the bounds above."""


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 6
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = REPR_LIMIT) -> str:
    """repr(value) cut to at most `limit` characters, in time bounded whatever the value's size."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a broken __repr__ must not replace the error being reported
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip(text: str, limit: int = REPR_LIMIT) -> str:
    """`text` cut to at most `limit` characters (for error messages that quote other errors)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_text_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The file's text; InputError if it is missing, larger than max_bytes or not UTF-8."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > max_bytes:
        raise InputError(f"{path} is larger than {max_bytes} bytes; not a config file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.start}: {short_repr(data[err.start:err.start + 4])})") \
            from None


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting and alias bombs while composing (before constructing)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    # The scanner runs ahead of the composer and keeps one possible simple key per open flow
    # collection, rescanned at every token: quadratic on "[[[[..." (5000 deep: seconds). Stop it early.
    def fetch_flow_sequence_start(self) -> None:
        self._check_flow_level()
        super().fetch_flow_sequence_start()

    def fetch_flow_mapping_start(self) -> None:
        self._check_flow_level()
        super().fetch_flow_mapping_start()

    def _check_flow_level(self) -> None:
        if self.flow_level >= MAX_DEPTH:
            raise InputError(f"nested deeper than {MAX_DEPTH} levels")

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise InputError(f"more than {MAX_ALIASES} YAML aliases")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise InputError(f"nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _expanded_size(root: yaml.Node) -> int:
    """Nodes in the document with every alias expanded (a shared node counts each time it is used).

    Iterative, memoised per node: linear in the composed graph however large the expansion is.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # on the current path: meeting one again is a recursive alias
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        else:
            sizes[id(node)] = 1
            continue
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = min(MAX_EXPANDED_NODES + 1, 1 + sum(sizes[id(c)] for c in children))
            continue
        if id(node) in open_nodes:
            raise InputError("a YAML alias refers to a value that contains it (infinite value)")
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def load_yaml_text(text: str) -> Any:
    """yaml.safe_load(text) within the module's bounds; InputError (a ValueError) otherwise."""
    try:  # the reader checks the characters (a control character is a YAMLError) as it is built
        loader = _BoundedLoader(text)
    except yaml.YAMLError as err:
        raise InputError(f"not valid YAML: {clip(str(err), 300)}") from None
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        if _expanded_size(root) > MAX_EXPANDED_NODES:
            raise InputError(f"the document expands (YAML aliases) to more than {MAX_EXPANDED_NODES} values")
        return loader.construct_document(root)
    except InputError:
        raise
    except yaml.YAMLError as err:
        raise InputError(f"not valid YAML: {clip(str(err), 300)}") from None
    except (RecursionError, TypeError, ValueError, OverflowError) as err:  # e.g. an unhashable mapping key
        raise InputError(f"not usable YAML: {type(err).__name__}: {clip(str(err))}") from None
    finally:
        loader.dispose()


def load_yaml_file(path: str | Path, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """`load_yaml_text(read_text_file(path))`; InputError naming the file otherwise."""
    text = read_text_file(path, max_bytes)
    try:
        return load_yaml_text(text)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None


def loads_json(text: str, max_depth: int = MAX_DEPTH) -> Any:
    """json.loads(text) refusing nesting deeper than max_depth; InputError otherwise."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:  # a cheap bracket scan: json's own recursion would hit Python's limit first
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > max_depth:
                raise InputError(f"JSON nested deeper than {max_depth} levels")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as err:
        raise InputError(f"not valid JSON ({clip(str(err))})") from None
