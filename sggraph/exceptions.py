"""The one exception hierarchy of sggraph.

Every error carries, where known, the *node* it happened at, the *file* and
*line* it was declared on, and a *fix*: a sentence that says what to change.
``str(error)`` renders all of it as one paragraph, which is what the CLI
prints (with exit code 2) instead of a traceback.

Examples
--------
>>> err = GraphError("unknown parent 'zz'", node="x", file="net.yaml", line=4,
...                  fix="declare a node named 'zz' or correct the spelling")
>>> print(err)
net.yaml:4: node 'x': unknown parent 'zz'. Fix: declare a node named 'zz' or correct the spelling.
"""

from __future__ import annotations

__all__ = [
    "CompileError",
    "ConfigError",
    "DataError",
    "DimensionError",
    "GradientError",
    "GraphError",
    "LambdaError",
    "SggraphError",
    "SpecError",
]


class SggraphError(Exception):
    """Base class of every error sggraph raises on purpose.

    Parameters
    ----------
    message : str
        What is wrong, without the location.
    node : str, optional
        The node (or array) the error is about.
    file, line : optional
        Where the node was declared (YAML files).
    fix : str, optional
        How to fix it.
    """

    def __init__(self, message: str, *, node: str | None = None, file: str | None = None,
                 line: int | None = None, fix: str | None = None) -> None:
        self.message = message
        self.node = node
        self.file = file
        self.line = line
        self.fix = fix
        super().__init__(str(self))

    def __str__(self) -> str:  # one paragraph: location, node, message, fix
        where = ""
        if self.file is not None:
            where = f"{self.file}:{self.line}: " if self.line is not None else f"{self.file}: "
        node = f"node '{self.node}': " if self.node is not None else ""
        text = f"{where}{node}{self.message.rstrip('.')}."
        if self.fix:
            text += f" Fix: {self.fix.rstrip('.')}."
        return text

    def located(self, file: str | None, line: int | None) -> SggraphError:
        """Fill in ``file``/``line`` where they are missing and return ``self``."""
        if self.file is None:
            self.file = file
        if self.line is None:
            self.line = line
        self.args = (str(self),)
        return self


class GraphError(SggraphError):
    """The graph's structure is invalid (unknown parent, cycle, layer, duplicate...)."""


class SpecError(SggraphError):
    """A YAML file or mapping does not follow the format (syntax, unknown key, type)."""


class CompileError(SggraphError):
    """The graph cannot be compiled (missing function, unknown built-in...)."""


class DimensionError(CompileError):
    """A tensor's shape disagrees with the node's declared dimension."""


class LambdaError(SggraphError):
    """A mixing weight is out of [0, 1], NaN, or names an unknown edge."""


class GradientError(SggraphError):
    """A non-finite gradient reached a mixer, or training diverged (a non-finite loss, output or parameter)."""


class DataError(SggraphError):
    """A data file is missing, truncated or of the wrong format."""


class ConfigError(SggraphError):
    """An experiment or CLI setting is invalid."""
