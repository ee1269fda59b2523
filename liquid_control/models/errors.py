"""`ModelFileError`, without torch: the deploy nodes catch it on the onnxruntime path, which never
imports the model file's torch code (models.model_file re-exports it)."""
from __future__ import annotations

from typing import Any


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Any, problem: str) -> None:
        super().__init__(f"model file {path}: {problem}")
        self.path = path
        self.problem = problem
