"""Hostile YAML: every file sggraph reads (graphs, ``train --config``, sweep specs) goes through one loader
that cannot hang, cannot grow memory without bound and never raises anything but an SggraphError."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from sggraph import Graph, GraphError, SpecError
from sggraph.cli import build_parser, main
from sggraph.core.safe_yaml import MAX_DEPTH, parse_yaml, read_yaml
from sggraph.sweeps import load_spec

ROOT = Path(__file__).resolve().parent.parent


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level lists the previous one ``width`` times (width^levels values)."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"a: &a [{','.join(['lol'] * width)}]"]
    for prev, name in zip(names, names[1:]):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * width)}]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_tiny_and_would_expand_beyond_a_billion_values():
    bomb = alias_bomb()
    assert len(bomb.encode()) < 400
    lines = bomb.splitlines()
    # each level lists the one before it `width` times: what a walk that follows every alias would visit
    expanded = lines[0].count("lol") * lines[-1].count("*") ** (len(lines) - 1)
    assert expanded > 300_000_000


def test_alias_bomb_is_refused_in_milliseconds_and_kilobytes():
    tracemalloc.start()
    t0 = time.process_time()  # CPU time: other processes on the machine do not count
    try:
        with pytest.raises(SpecError, match="once its aliases"):
            parse_yaml(alias_bomb(), file="bomb.yaml")
        seconds = time.process_time() - t0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1.0 and peak < 5 * 1024 * 1024


@pytest.mark.parametrize("command", ["check-conditions", "draw", "sweep", "train"])
def test_alias_bomb_is_refused_by_every_command_that_reads_yaml(command, tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    args = {"check-conditions": ["check-conditions", str(bomb)],
            "draw": ["draw", str(bomb), "-o", str(tmp_path / "x.svg")],
            "sweep": ["sweep", str(bomb), "--out", str(tmp_path / "s")],
            "train": ["train", "mnist-bandit", "--config", str(bomb), "--out", str(tmp_path / "r")]}[command]
    t0 = time.perf_counter()
    assert main(args) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert f"{bomb}:" in err and "aliases" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.yaml"]


def test_alias_bomb_through_the_real_command_under_a_memory_cap(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb())
    limit = 4 * 1024 ** 3  # address space: the interpreter and its libraries fit, a billion values do not

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "sggraph", "check-conditions", str(bomb)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, preexec_fn=cap, check=False)
    assert proc.returncode == 2 and "once its aliases" in proc.stderr and "Traceback" not in proc.stderr


def test_small_aliases_are_fine_and_shared_values_are_indexed_once():
    doc = parse_yaml("base: &b {steps: 10, seed: 0}\nrun: *b\n", file="s.yaml")
    assert doc.data == {"base": {"steps": 10, "seed": 0}, "run": {"steps": 10, "seed": 0}}
    assert doc.lines["$.run"] == 2


def test_an_alias_into_itself_is_refused():
    with pytest.raises(SpecError, match=r"alias \*a refers to a value that contains it"):
        parse_yaml("a: &a [1, *a]\n", file="r.yaml")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "a:\n" + "".join("  " * i + "- \n" for i in range(1, 3000)),
                                  "x: " + "{a: " * 200 + "1" + "}" * 200])
def test_deep_nesting_is_a_located_error_not_a_recursion_error(text, tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=f"nest more than {MAX_DEPTH} levels"):
        Graph.from_yaml(str(path))


def test_nesting_up_to_the_limit_is_read():
    deep = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert parse_yaml(deep).data is not None


def test_file_size_is_capped(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("name: g\n" + "# padding\n" * 2000)
    with pytest.raises(SpecError, match="larger than 100 bytes"):
        read_yaml(path, max_bytes=100)
    assert read_yaml(path).data == {"name": "g"}


def test_a_device_that_never_ends_is_cut_at_the_size_cap():
    with pytest.raises(SpecError, match="larger than"):
        read_yaml("/dev/zero", max_bytes=1 << 16)


def test_non_utf8_bytes_give_the_file_byte_offset_and_line(tmp_path):
    path = tmp_path / "latin1.yaml"
    raw = "name: g\nnodes:\n  - {name: caf\u00e9, dim: 1}\n".encode("latin-1")
    path.write_bytes(raw)
    with pytest.raises(SpecError) as info:
        Graph.from_yaml(str(path))
    text = str(info.value)
    assert text.startswith(f"{path}:3: byte {raw.index(0xE9)} (0xe9) is not UTF-8 text")
    assert "save the file as UTF-8" in text


@pytest.mark.parametrize("payload", [bytes(range(256)) * 4, b"\x00\x01\x02name: g\n", b"\x89PNG\r\n\x1a\n" + b"\0" * 64])
def test_binary_files_are_refused_with_one_paragraph(payload, tmp_path, capsys):
    path = tmp_path / "blob.yaml"
    path.write_bytes(payload)
    assert main(["check-conditions", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sggraph: error: {path}:") and "Traceback" not in err and err.count("\n") == 1


def test_binary_sweep_spec_and_config_are_refused(tmp_path, capsys):
    blob = tmp_path / "blob.yaml"
    blob.write_bytes(b"name: \xff\xfe\x00\n")
    assert main(["sweep", str(blob), "--out", str(tmp_path / "s")]) == 2
    assert "byte 6 (0xff) is not UTF-8" in capsys.readouterr().err
    assert main(["train", "mnist-bandit", "--config", str(blob), "--out", str(tmp_path / "r")]) == 2
    assert "byte 6 (0xff) is not UTF-8" in capsys.readouterr().err
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(blob, build_parser())


@pytest.mark.parametrize("text,needle,line", [
    ("name: g\nnodes:\n  - {name: z, dim: 2001-13-45}\n", "cannot read the value '2001-13-45'", 3),
    ("name: g\nnodes:\n  - {name: z, dim: " + "9" * 5000 + "}\n", "Exceeds the limit", 3),
    ("name: g\nnodes: !!python/object:os.system [echo]\n", "YAML tag not allowed", 2),
    ("name: g\n---\nname: h\n", "YAML syntax error", 2),
])
def test_values_python_rejects_are_located(text, needle, line, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(SpecError, match=needle) as info:
        Graph.from_yaml(str(path))
    assert info.value.line == line and info.value.file == str(path)


def test_huge_dim_is_a_graph_error_at_its_line(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    path.write_text("name: g\nnodes:\n  - {name: z, dim: 1}\n  - {name: h, dim: 100000000000000000000, parents: [z], "
                    "fn: linear}\n")
    with pytest.raises(GraphError, match="larger than the limit") as info:
        Graph.from_yaml(str(path))
    assert info.value.line == 4 and info.value.node == "h"
    assert main(["check-conditions", str(path)]) == 2
    assert main(["draw", str(path), "-o", str(tmp_path / "h.svg")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("larger than the limit") == 2


def test_the_loader_agrees_with_yaml_safe_load_on_the_shipped_files():
    files = [p for p in ROOT.rglob("*.yaml") if ".venv" not in p.parts]
    assert len(files) >= 8
    for path in files:
        text = path.read_text()
        assert read_yaml(path).data == yaml.safe_load(text), path


@pytest.mark.parametrize("text", [
    "a: [1, 2.5, .inf, null, ~, true, no, 0x1f, 2001-12-14, 'q', !!str 3, !!float 3, !!binary aGVsbG8=]\n",
    "<<: {a: 1}\nb: 2\n", "s: !!set {x, y}\n", "? !!int 3\n: x\n", "- - - a\n  - b\n", "{a: [1, {b: c}], d: }\n",
    "x: &x {k: v}\ny: *x\n", "", "# only a comment\n", "plain text\n",
])
def test_the_loader_types_values_exactly_like_safe_load(text):
    assert parse_yaml(text).data == yaml.safe_load(text)


def test_config_values_of_the_wrong_type_are_located(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 5\nlr: fast\n")
    assert main(["train", "mnist-bandit", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}:2: lr = 'fast' is not a number" in err and "Traceback" not in err
    cfg.write_text("classes: [one, two]\n")
    assert main(["train", "mnist-bandit", "--config", str(cfg), "--out", str(tmp_path / "r")]) == 2
    assert f"{cfg}:1: classes" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_sweep_grid_of_too_many_runs_is_refused_before_it_is_expanded(tmp_path, capsys):
    spec = tmp_path / "huge.yaml"
    values = ", ".join(str(i) for i in range(100))
    spec.write_text(f"command: train mnist-bandit\ngrid:\n  seed: [{values}]\n  steps: [{values}]\n"
                    f"  width: [{values}]\n")
    t0 = time.perf_counter()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert f"{spec}:2: the grid makes 1,000,000 runs, more than the 10,000" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layer", [10**30, -1, 2.5])
def test_a_source_layer_out_of_range_is_a_graph_error(layer, tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(f"nodes:\n  - {{name: z, dim: 1}}\n  - {{name: e, dim: 1, layer: {layer}}}\n")
    with pytest.raises((GraphError, SpecError)) as info:
        Graph.from_yaml(str(path))
    assert info.value.line == 3 and info.value.node == "e"
