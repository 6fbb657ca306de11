"""``--help`` says what each flag means and which values it takes; every command has a description; a wrong or
abbreviated flag is refused by the subcommand that was chosen, with its usage and the closest flag."""

from __future__ import annotations

import re

import pytest

from sggraph.cli import build_parser, main

ROOT_FILE = "examples/sparse-ff.yaml"


def test_every_command_and_experiment_has_a_description():
    parser = build_parser()
    missing = [name for name, sub in parser.commands.items() if not sub.description]
    missing += [f"train {name}" for name, sub in parser.commands["train"].commands.items() if not sub.description]
    assert not missing


@pytest.mark.parametrize("experiment", ["mnist-bandit", "popgym"])
def test_every_train_flag_says_what_it_is(experiment):
    sub = build_parser().commands["train"].commands[experiment]
    bare = [a.option_strings[0] for a in sub.options if a.help and re.fullmatch(r"default .*", a.help)]
    assert not bare  # not just "default X"


def test_help_lists_the_choices(capsys):
    with pytest.raises(SystemExit):
        main(["train", "mnist-bandit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--method METHOD sgprop | backprop | mlp (default sgprop)" in text
    assert "--q Q neuron dimension (default 10)" in text
    assert "--update-order UPDATE_ORDER generator-first (the authors') | single-pass" in text
    assert "--lr LR policy learning rate (None: Table 1's, 0.005 sgprop, 0.001 backprop, 2e-5 mlp)" in text


@pytest.mark.parametrize("argv,usage,hint", [
    (["train", "mnist-bandit", "--stepz", "3"], "usage: sggraph train mnist-bandit", "did you mean --steps?"),
    (["train", "mnist-bandit", "--step", "3"], "usage: sggraph train mnist-bandit", "did you mean --steps?"),
    (["check-conditions", ROOT_FILE, "--unrol", "3"], "usage: sggraph check-conditions", "did you mean --unroll?"),
])
def test_a_wrong_or_abbreviated_flag_is_refused_with_the_subcommands_usage(argv, usage, hint, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and f"unrecognized arguments: {argv[-2]} {argv[-1]}" in err and hint in err
