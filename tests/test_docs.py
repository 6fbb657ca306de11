"""The documents say what the code does: snippets run, commands parse, names and links resolve, tables equal the CSVs.

- every fenced ``python`` block of ``README.md`` runs as written (each must finish in seconds:
  a snippet that needs a long computation must not be put in the README);
- every ``sggraph …`` command shown in ``README.md``, ``examples/results/README.md`` and
  ``examples/results/speed/README.md`` — in fenced blocks and in inline code — is parsed by the
  real parser (``sggraph.cli.build_parser``) without running it; a synopsis line (with ``[…]`` or
  ``a|b``) must name an existing command and only flags that command has;
- every ``python examples/….py`` command names an existing script and only flags it defines;
- every ``sggraph.…`` name in inline code resolves to an attribute;
- every relative link and image exists, and every ``#anchor`` names a heading of its target;
- every derived table of the results documents equals ``examples/results/derive_tables.py``.
So renaming a flag, a command or a public name that a document shows fails this file.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from sggraph.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = [README, ROOT / "examples" / "results" / "README.md", ROOT / "examples" / "results" / "speed" / "README.md"]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")  # inline code, possibly wrapped over lines
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _prose(text: str) -> str:
    """``text`` without its fenced blocks."""
    return FENCE.sub("", text)


def _blocks(text: str, langs: set[str]) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in langs]


def _command_lines(block: str) -> list[str]:
    """Commands of a shell block: ``$`` prompts dropped, ``\\`` continuations and indented synopsis lines joined."""
    out: list[str] = []
    joining = False
    for raw in block.splitlines():
        line = raw[2:] if raw.startswith("$ ") else raw
        if joining or (raw[:1].isspace() and out and line.strip()):
            out[-1] = out[-1].rstrip("\\ ") + " " + line.strip()
        elif line.strip():
            out.append(line.strip())
        joining = line.rstrip().endswith("\\")
    return [c.rstrip("\\ ") for c in out]


def _sggraph_commands(path: Path) -> list[str]:
    text = _text(path)
    cmds = [c for block in _blocks(text, {"", "sh", "bash", "console", "text"}) for c in _command_lines(block)]
    cmds += [" ".join(m.group(1).split()) for m in INLINE.finditer(_prose(text))]
    return [c for c in cmds if re.match(r"(\S*/)?sggraph( |$)", c)]


def _python_commands(path: Path) -> list[str]:
    text = _text(path)
    cmds = [c for block in _blocks(text, {"", "sh", "bash", "console"}) for c in _command_lines(block)]
    return [c for c in cmds if re.match(r"python3? examples/\S+\.py", c)]


def _strict_parser():
    """The real parser, with abbreviations off: a shown ``--unrol`` must not pass as ``--unroll``."""
    parser = build_parser()
    stack = [parser]
    while stack:
        p = stack.pop()
        p.allow_abbrev = False
        stack += list(p.commands.values())
    return parser


def _subparser(parser, words: list[str]):
    """The (sub)parser of a command path such as ``["train", "popgym"]``."""
    for w in words:
        if w not in parser.commands:
            return None
        parser = parser.commands[w]
    return parser


def _option_strings(parser) -> set[str]:
    return {s for action in parser._actions for s in action.option_strings}


def check_synopsis(line: str) -> list[str]:
    """Problems of a synopsis line: an unknown command, or a flag its command does not have."""
    tokens = line.split()[1:]
    words = []
    for tok in tokens:
        if tok.startswith(("-", "[", "<")) or tok.isupper() or "/" in tok or "." in tok:
            break
        words.append(tok)
    if not words:
        return [f"{line!r}: no command"] if not any(t.startswith("--") for t in tokens) else []
    problems = []
    paths = [[words[0]]]
    if len(words) > 1:
        paths = [[words[0], alt] for alt in words[1].split("|")]
    for path in paths:
        sub = _subparser(build_parser(), path)
        if sub is None:
            problems.append(f"{line!r}: no command 'sggraph {' '.join(path)}'")
            continue
        known = _option_strings(sub)
        problems += [f"{line!r}: 'sggraph {' '.join(path)}' has no flag {f}"
                     for f in FLAG.findall(line) if f not in known]
    return problems


def check_command(line: str) -> list[str]:
    """Problems of one shown ``sggraph …`` command (parsed, never run)."""
    if re.search(r"\[|\||\.\.\.|…", line):
        return check_synopsis(line)
    try:
        tokens = shlex.split(line, comments=True)[1:]
    except ValueError as e:
        return [f"{line!r}: {e}"]
    if not tokens or (len(tokens) == 1 and not tokens[0].startswith("-")):
        return [] if _subparser(build_parser(), tokens) is not None else [f"{line!r}: no such command"]
    if len(tokens) == 2 and _subparser(build_parser(), tokens) is not None:
        return []  # a command path alone, e.g. `sggraph train popgym`
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _strict_parser().parse_args(tokens)
    except SystemExit as e:
        if e.code not in (0, None):  # --help and --version exit 0
            return [f"{line!r}: {err.getvalue().strip().splitlines()[-1]}"]
    return []


def test_readme_is_a_short_users_guide():
    text = _text(README)
    assert len(text.splitlines()) <= 400
    hashes = [h for h in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"\d", h) and re.search(r"[a-f]", h)]
    assert not hashes, f"commit hashes in README.md: {hashes}"


@pytest.mark.parametrize("index", range(len(_blocks(_text(README), {"python"}))))
def test_readme_python_block_runs(index, capsys):
    block = _blocks(_text(README), {"python"})[index]
    exec(compile(block, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})


def test_every_sggraph_command_in_the_documents_parses():
    problems, seen = [], 0
    for doc in DOCS:
        for cmd in _sggraph_commands(doc):
            seen += 1
            problems += [f"{doc.relative_to(ROOT)}: {p}" for p in check_command(cmd)]
    assert seen >= 30
    assert not problems, "\n".join(problems)


def test_every_example_script_command_names_real_flags():
    problems, seen = [], 0
    for doc in DOCS:
        for cmd in _python_commands(doc):
            seen += 1
            script = ROOT / cmd.split()[1]
            if not script.is_file():
                problems.append(f"{doc.relative_to(ROOT)}: no script {script.relative_to(ROOT)}")
                continue
            source = _text(script)
            problems += [f"{doc.relative_to(ROOT)}: {script.name} has no flag {f}"
                         for f in FLAG.findall(cmd) if f'"{f}"' not in source]
    assert seen >= 8
    assert not problems, "\n".join(problems)


def _resolve(name: str):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


def test_every_sggraph_name_in_the_documents_resolves():
    problems, seen = [], 0
    for doc in DOCS:
        for m in INLINE.finditer(_prose(_text(doc))):
            name = re.match(r"sggraph(\.\w+)+", m.group(1))
            if not name:
                continue
            seen += 1
            try:
                _resolve(name.group(0))
            except (ImportError, AttributeError) as e:
                problems.append(f"{doc.relative_to(ROOT)}: `{name.group(0)}` does not resolve ({e})")
    assert seen >= 20
    assert not problems, "\n".join(problems)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", _prose(_text(path)), re.M)}


def test_every_link_and_anchor_in_the_documents_exists():
    problems = []
    for doc in DOCS:
        for target in LINK.findall(_prose(_text(doc))):
            if re.match(r"https?://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                problems.append(f"{doc.relative_to(ROOT)}: missing {target}")
            elif anchor and anchor not in _anchors(dest):
                problems.append(f"{doc.relative_to(ROOT)}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not problems, "\n".join(problems)


def test_derived_tables_equal_the_committed_csvs():
    sys.path.insert(0, str(ROOT / "examples" / "results"))
    try:
        derive = importlib.import_module("derive_tables")
    finally:
        sys.path.pop(0)
    docs = [d for d in derive.DOCUMENTS]
    assert sum(len(derive.derived(_text(d))) for d in docs) >= 30
    assert derive.check(docs) == []


def test_the_checks_catch_a_renamed_flag_and_command():
    """The parser checks above can fail: a misspelt flag or command is reported."""
    assert check_command("sggraph check-conditions examples/expert-net.yaml --node e1") == []
    assert check_command("sggraph check-conditions examples/expert-net.yaml --nodes e1")
    assert check_command("sggraph check-conditions examples/popgym-sparsenet-cell.yaml --unrol 80")  # no abbreviations
    assert check_command("sggraph draw MODEL.yaml -o OUT.svg [--unrol T]")
    assert check_command("sggraph trian popgym --seed 0")
    assert check_command("sggraph train popgym|mnist-bandit [--num-envs 20]")  # mnist-bandit has no --num-envs


def _all_flags() -> set[str]:
    """Every flag of every ``sggraph`` command and of every example script."""
    flags, stack = set(), [build_parser()]
    while stack:
        p = stack.pop()
        flags |= _option_strings(p)
        stack += list(p.commands.values())
    for script in (ROOT / "examples").rglob("*.py"):
        flags |= set(re.findall(r"\"(--[a-z][a-z0-9-]*)\"", _text(script)))
    return flags


def test_every_flag_named_in_the_prose_exists():
    """A flag quoted alone in the prose (``--update-order generator-first``) is one of ours.

    Spans quoting the authors' own scripts (``main.py …``) are theirs, not ours, and skipped.
    """
    known, problems = _all_flags(), []
    for doc in DOCS:
        for m in INLINE.finditer(_prose(_text(doc))):
            span = " ".join(m.group(1).split())
            if "main.py" in span or span.startswith(("python", "sggraph")):
                continue  # the authors' scripts; our commands are parsed by the tests above
            problems += [f"{doc.relative_to(ROOT)}: `{span}` names no flag of ours: {f}"
                         for f in re.findall(r"--[a-z][a-z0-9-]*(?![\w])", span) if f not in known]
    assert not problems, "\n".join(problems)
