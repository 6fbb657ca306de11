"""Loaded by a test's child process (``PYTHONPATH`` names this folder): with ``SGGRAPH_PAUSE_AT=N`` and
``SGGRAPH_PAUSE_FILE=PATH`` set, a training run announces that it is about to begin its step N (steps 1 … N − 1
done) by writing PATH, then waits there until it is killed. A test kills it at that known step — no polling race.

Only the MNIST bandit's steps are counted (its ``follow_load``, called as every step begins).
"""

from __future__ import annotations

import os

if os.environ.get("SGGRAPH_PAUSE_AT") and os.environ.get("SGGRAPH_PAUSE_FILE"):
    import importlib.abc
    import sys
    import time

    _AT = int(os.environ["SGGRAPH_PAUSE_AT"])
    _FILE = os.environ["SGGRAPH_PAUSE_FILE"]

    def _patch(module) -> None:
        real = module.follow_load
        calls = [0]

        def follow_load() -> None:
            calls[0] += 1
            if calls[0] == _AT:
                with open(_FILE + ".tmp", "w") as fh:
                    fh.write(f"{os.getpid()} {_AT}\n")
                os.replace(_FILE + ".tmp", _FILE)
                while True:  # killed here
                    time.sleep(60)
            real()

        module.follow_load = follow_load

    class _Finder(importlib.abc.MetaPathFinder):
        """Patch ``sggraph.experiments.mnist_bandit`` once it is loaded."""

        def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 - the protocol's own signature
            if name != "sggraph.experiments.mnist_bandit":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            sys.meta_path.insert(0, self)
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module) -> None:
                original(module)
                _patch(module)

            loader.exec_module = exec_module
            return spec

    import importlib.util

    sys.meta_path.insert(0, _Finder())
