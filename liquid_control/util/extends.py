"""The `extends` chain of a YAML file (training recipes, scenarios): the file, the file it extends, and so
on, read iteratively and bounded, so that no cycle or chain can hang or exhaust the stack. Each caller
merges the chain with its own rules and reports errors as its own error type."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def extends_chain(path: Path, read: Callable[[Path], dict[str, Any]], base_path: Callable[[Path, Any], Path],
                  error: Callable[[Path, str], Exception], max_files: int) -> list[tuple[Path, dict[str, Any]]]:
    """[(file, its mapping)] from `path` down its chain. `read` reads one file (raising the caller's error),
    `base_path(file, value)` turns a file's `extends` value into the next file (checking the value), and
    `error(file, message)` builds the exception for a cycle (named by `path`), a chain longer than
    `max_files` files or a name the file system cannot resolve."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    seen: list[str] = []
    current = path
    while True:
        data = read(current)
        try:
            resolved = str(current.resolve())
        except (OSError, ValueError) as exc:  # a NUL byte, a name too long for the file system
            raise error(current, f"cannot resolve the file name: {exc}") from None
        if resolved in seen:
            raise error(path, f"circular extends: {' -> '.join(seen + [resolved])}")
        seen.append(resolved)
        chain.append((current, data))
        base = data.get("extends")
        if base is None:
            return chain
        if len(chain) > max_files:
            raise error(path, f"the extends chain is longer than {max_files} files")
        current = base_path(current, base)
