"""The normaliser compiled by setup.py (mypyc) never hides a newer source.

A compiled module is found before its `.py`; after an edit to one of the normaliser's sources the
whole compiled group must give way to the sources, or a developer would test yesterday's code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import anysentry
from anysentry.events import observer

PACKAGE = Path(anysentry.__file__).parent
COMPILED = sorted((PACKAGE / "events").glob("observer.*.so"))


def _copy_package(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(PACKAGE, root / "anysentry", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _import_file(root: Path, module: str) -> str:
    code = f"import {module} as m; print(m.__file__); print(getattr(m, 'EDITED', ''))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env={"PYTHONPATH": str(root), "PATH": ""},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(not COMPILED, reason="normaliser installed as pure Python (no C compiler at install time)")
def test_an_installed_compiled_normaliser_is_the_one_imported(tmp_path):
    assert observer.__file__.endswith(".so")
    out = _import_file(_copy_package(tmp_path), "anysentry.events.observer")
    assert out.splitlines()[0].endswith(".so")


@pytest.mark.skipif(not COMPILED, reason="normaliser installed as pure Python (no C compiler at install time)")
def test_an_edited_source_is_imported_instead_of_the_stale_compiled_group(tmp_path):
    root = _copy_package(tmp_path)
    redact = root / "anysentry" / "events" / "redact.py"
    redact.write_text(redact.read_text() + "\nEDITED = 'yes'\n")
    out = _import_file(root, "anysentry.events.redact").splitlines()
    assert out == [str(redact), "yes"]
    # its compiled callers give way too: they would call the stale compiled redact natively
    assert _import_file(root, "anysentry.events.observer").splitlines()[0].endswith("observer.py")
