"""Where the package's shared files (config/, sim/, launch/, models/) live.

Works from a source checkout (editable install), from a pip install (files under
<prefix>/share/liquid_control) and from a colcon install (ament index).
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

PACKAGE = "liquid_control"


@lru_cache(maxsize=None)
def share_dir() -> Path:
    """Directory holding package.xml, config/, sim/, launch/ and models/."""
    source_root = Path(__file__).resolve().parents[2]  # liquid_control/util/paths.py -> checkout
    candidates = [source_root, Path(sys.prefix) / "share" / PACKAGE]
    try:  # colcon / ament install
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)))
    except Exception:  # package not in the ament index: fine outside a ROS workspace
        pass
    for path in candidates:
        if (path / "package.xml").is_file() and (path / "config").is_dir():
            return path
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} share directory (looked in: {', '.join(map(str, candidates))})"
    )


def share_path(*parts: str) -> Path:
    """Path of a shared file, e.g. share_path('sim', 'airframes', 'cf2x.yaml')."""
    return share_dir().joinpath(*parts)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Replace `path` with `text` so a reader sees the old file or the new one, never half of it (a hidden
    temp file beside it, renamed over it)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
