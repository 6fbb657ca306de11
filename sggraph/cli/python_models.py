"""Model files in Python: ``FILE.py:NAME`` names a callable in ``FILE.py`` that returns
``(module, example_inputs)`` or a :class:`~sggraph.TraceSpec`; the command works on the graph
:func:`sggraph.trace` reads from it.

``sggraph check-conditions model.py:build`` and ``sggraph draw model.py:build -o net.svg`` take
it where they take a YAML file; errors (a missing file or name, an exception in the file, a model
``torch.fx`` cannot trace) name the file and line and exit with code 2, as for YAML.

>>> is_python_target("examples/dni_mnist.py:build"), is_python_target("examples/expert-net.yaml")
(True, False)
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import os
import sys
import traceback

from ..core.graph import Graph
from ..exceptions import ConfigError, SggraphError

__all__ = ["is_python_target", "load_traced_graph"]


def is_python_target(path: str) -> bool:
    """Whether ``path`` has the form ``FILE.py:NAME``."""
    file, sep, name = str(path).rpartition(":")
    return bool(sep) and file.endswith(".py") and name.isidentifier()


def _frame_in(exc: BaseException, file: str) -> int | None:
    """The line of the innermost traceback frame in ``file`` (None when none is)."""
    target = os.path.abspath(file)
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if os.path.abspath(frame.filename) == target:
            return frame.lineno
    return None


def _first_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def _import(file: str):  # noqa: ANN202 - the user's module object
    if not os.path.isfile(file):
        raise ConfigError("no such model file", file=file,
                          fix="pass FILE.py:NAME with an existing Python file (or a graph YAML file)")
    digest = hashlib.sha1(os.path.abspath(file).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"sggraph_model_{digest}", file)
    if spec is None or spec.loader is None:
        raise ConfigError("cannot import the file as Python", file=file, fix="pass a .py file")
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(os.path.abspath(file))
    sys.path.insert(0, folder)  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(f"the file is not valid Python: {exc.msg}", file=file, line=exc.lineno,
                          fix="correct the syntax error") from None
    except SggraphError:
        raise
    except Exception as exc:  # the user's code may raise anything while importing
        raise ConfigError(f"importing the file raised {_first_line(exc)}", file=file, line=_frame_in(exc, file),
                          fix="fix the error at that line (the file is run as a module)") from None
    finally:
        if sys.path and sys.path[0] == folder:
            sys.path.pop(0)
    return module


def load_traced_graph(target: str) -> Graph:
    """The traced graph of ``FILE.py:NAME`` (see the module docstring)."""
    from ..tracing import TraceSpec

    file, _, name = str(target).rpartition(":")
    module = _import(file)
    obj = getattr(module, name, None)
    if obj is None:
        names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"the closest are {', '.join(close)}" if close else f"callables in the file: {', '.join(names[:10])}"
        raise ConfigError(f"the file defines no {name!r}", file=file, fix=f"name a callable of the file ({hint})")
    try:
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        line = None
    if not callable(obj):
        raise ConfigError(f"{name!r} is a {type(obj).__name__}, not a callable", file=file, line=line,
                          fix=f"define {name}() returning (module, example_inputs) or a sggraph.TraceSpec")
    try:
        made = obj()
    except SggraphError:
        raise
    except Exception as exc:  # the user's callable may raise anything
        raise ConfigError(f"{name}() raised {_first_line(exc)}", file=file, line=_frame_in(exc, file) or line,
                          fix=f"make {name}() return (module, example_inputs) or a sggraph.TraceSpec") from None
    if isinstance(made, TraceSpec):
        spec = made
    elif isinstance(made, tuple) and len(made) == 2:
        spec = TraceSpec(*made)
    else:
        raise ConfigError(f"{name}() returned a {type(made).__name__}", file=file, line=line,
                          fix=f"make {name}() return (module, example_inputs) or a sggraph.TraceSpec")
    try:
        return spec.trace().graph
    except SggraphError as err:
        raise err.located(file, line) from None
    except Exception as exc:  # torch itself, on inputs the module rejects
        raise ConfigError(f"tracing {name}()'s model raised {_first_line(exc)}", file=file, line=line,
                          fix="check the module and its example inputs") from None
