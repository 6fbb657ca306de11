"""Doctests of sggraph.models and sggraph.envs, imported by their installed names.

(pytest's own doctest collection would import models/ and envs/ as top-level packages.)
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import sggraph.envs
import sggraph.models

MODULES = [f"{pkg.__name__}.{info.name}" for pkg in (sggraph.models, sggraph.envs)
           for info in pkgutil.iter_modules(pkg.__path__)]


@pytest.mark.parametrize("name", MODULES)
def test_module_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
