"""Flags and data the command would fail on later are refused first, with exit 2 and a located message:
an MNIST file of 0 images, ``bench --steps -1`` / ``--compile nope``, ``mse --samples 1e9`` / ``--noise nan``."""

from __future__ import annotations

import struct

import pytest

from sggraph.cli import main


def test_an_mnist_file_of_zero_images_is_a_located_error(tmp_path, capsys):
    data = tmp_path / "mnist"
    data.mkdir()
    (data / "train-images-idx3-ubyte").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 0, 28, 28))
    (data / "train-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 0))
    out = tmp_path / "run"
    assert main(["train", "mnist-bandit", "--steps", "2", "--data-dir", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte: the image file holds 0 images" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("argv,needle", [
    (["bench", "--steps", "-1"], "--steps -1 is outside 1..100000"),
    (["bench", "--steps", "0", "--json"], "--steps 0 is outside"),
    (["bench", "--compile", "nope"], "--compile nope: torch.compile has no such backend"),
    (["mse", "examples/regression-dag.yaml", "--samples", "1000000000"], "--samples 1000000000 is outside"),
    (["mse", "examples/regression-dag.yaml", "--samples", "5000000"], "GB of per-sample values"),
    (["mse", "examples/regression-dag.yaml", "--noise", "nan"], "--noise nan is not a finite non-negative number"),
    (["mse", "examples/regression-dag.yaml", "--lambda", "1.5"], "--lambda 1.5 is outside [0, 1]"),
    (["mse", "examples/regression-dag.yaml", "--generator-lr", "inf"], "--generator-lr inf is not a finite non-negative"),
])
def test_a_bad_flag_is_refused_before_the_work(argv, needle, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Fix:" in err and "Traceback" not in err
    assert "fit generators" not in err and "bandit" not in err  # no section of the work began
