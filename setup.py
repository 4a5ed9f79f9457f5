"""Compiles the observer-line normaliser with mypyc when a C compiler is at hand; pure Python otherwise.

The modules below are plain, typed Python and behave the same either way (the test suite runs on
whichever was installed). Compiled, normalisation runs ~1.4× faster (bench/judge.py). A build that
cannot compile (no compiler, no Python headers, `ANYSENTRY_PURE_PYTHON=1`) installs the sources only.
Each build records the sources it compiled (`anysentry/events/_normaliser.json`) so that a source
edited after the build is imported instead of its stale compiled module (see anysentry/events/__init__.py)."""

import hashlib
import json
import os
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).parent
NORMALISER = ("observer", "redact", "ids", "kinds", "timefmt")  # anysentry/events/<name>.py, compiled together
STAMP = ROOT / "anysentry" / "events" / "_normaliser.json"


def extensions() -> list:
    if os.environ.get("ANYSENTRY_PURE_PYTHON"):
        return []
    paths = [f"anysentry/events/{name}.py" for name in NORMALISER]
    try:
        from mypyc.build import mypycify

        exts = mypycify(["--ignore-missing-imports", *paths], opt_level="3", group_name="anysentry.events._normaliser")
    except (ImportError, SystemExit, Exception) as exc:  # noqa: BLE001 - compiling is an optimisation
        print(f"anysentry: normaliser not compiled ({type(exc).__name__}: {exc}); installing pure Python")
        return []
    for ext in exts:
        ext.optional = True  # a failed C build leaves the pure-Python modules in charge
    STAMP.write_text(json.dumps({name: hashlib.sha256((ROOT / path).read_bytes()).hexdigest()
                                 for name, path in zip(NORMALISER, paths)}, indent=1) + "\n")
    return exts


def c_extensions() -> list:
    """Two hot paths of the normaliser in C, optional like the rest (the Python code they replace
    gives the same results): OpenSSL's SHA-1 for event ids (`events/_sha1.c`; hashlib without
    OpenSSL's headers) and the marker scan of a line (`events/_scan.c`)."""
    if os.environ.get("ANYSENTRY_PURE_PYTHON"):
        return []
    return [Extension("anysentry.events._sha1", ["anysentry/events/_sha1.c"], libraries=["crypto"], optional=True),
            Extension("anysentry.events._scan", ["anysentry/events/_scan.c"], optional=True)]


setup(ext_modules=extensions() + c_extensions())
