"""`anysentry crds [--out DIR] [--check]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from anysentry.resources import command
from anysentry.resources.crd import render_all

ROOT = Path(__file__).resolve().parents[3]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return command.run(parser.parse_args(list(argv)))


def test_registered_in_the_cli():
    from anysentry.cli import COMMANDS

    assert COMMANDS["crds"][0] == "anysentry.resources.command"


def test_repository_crds_pass_the_check(capsys):
    assert _run("--check", "--out", str(ROOT / "crds")) == 0
    assert "match the models" in capsys.readouterr().out


def test_writes_then_checks_then_reports_drift(tmp_path, capsys):
    out = tmp_path / "crds"
    assert _run("--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(render_all())
    assert _run("--check", "--out", str(out)) == 0

    (out / "policies.anysentry.io.yaml").write_text("edited\n")
    (out / "sources.anysentry.io.yaml").unlink()
    (out / "gadgets.anysentry.io.yaml").write_text("old kind\n")
    (out / "README.md").write_text("not ours\n")
    capsys.readouterr()
    assert _run("--check", "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert "policies.anysentry.io.yaml: differs from the models" in err
    assert "sources.anysentry.io.yaml: missing" in err
    assert "gadgets.anysentry.io.yaml: stale" in err
    assert "README.md" not in err and "run `anysentry crds`" in err

    assert _run("--out", str(out)) == 0
    assert _run("--check", "--out", str(out)) == 0
    assert (out / "README.md").exists() and not (out / "gadgets.anysentry.io.yaml").exists()


def test_check_of_a_missing_folder_fails(tmp_path, capsys):
    assert _run("--check", "--out", str(tmp_path / "nope")) == 1
