"""Bad-YAML cases shared by the graph and cell error tests (``test_spec_errors``, ``test_cell_yaml``).

A :class:`Case` is one bad file and the error it must produce. Each test file checks its cases
twice, through the loader and through ``sggraph check-conditions``; the checks both loaders and
both command lines share are :func:`assert_located` and :func:`assert_cli_paragraph`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    id: str
    text: str
    exc: type
    line: int
    node: str | None
    words: tuple[str, ...] = ()  # fragments expected in the message or the fix


def write_case(tmp_path: Path, case: Case) -> Path:
    """``case.text`` written to ``{tmp_path}/{case.id}.yaml``."""
    path = tmp_path / f"{case.id}.yaml"
    path.write_text(case.text)
    return path


def assert_located(err: Exception, case: Case) -> None:
    """``err`` is exactly ``case.exc`` at ``case.line`` and ``case.node``, with a fix and ``case.words`` in its text."""
    assert type(err) is case.exc, str(err)
    assert err.line == case.line, str(err)
    assert err.node == case.node, str(err)
    assert err.fix, str(err)
    text = str(err)
    for word in case.words:
        assert word in text, (word, text)


def assert_cli_paragraph(out: str, err: str, case: Case) -> None:
    """The command line's report of ``case``: nothing on stdout, one paragraph on stderr with a fix, the node
    named and no traceback."""
    assert out == ""
    assert "Traceback" not in err
    assert "Fix:" in err
    if case.node is not None:
        assert f"node '{case.node}'" in err
    assert err.count("\n") == 1  # one paragraph
