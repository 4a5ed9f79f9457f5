"""`anysentry crds [--out DIR] [--check]`: render the CRD manifests from the models.

Writes `<DIR>/<plural>.anysentry.io.yaml`, one file per kind (and removes stale generated files of
that form). With `--check`, writes nothing and exits 1 listing the files that differ, are missing
or are stale, so CI catches a model change without a re-render.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .crd import render_all
from .models import GROUP

GENERATED_GLOB = f"*.{GROUP}.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="crds", metavar="DIR", help="folder of the CRD files (default: crds)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file differs from the models")


def differences(out: Path) -> list[str]:
    """Problems between the rendered CRDs and the files in `out`, one line each (empty: in sync)."""
    rendered = render_all()
    problems = []
    for name, text in rendered.items():
        path = out / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{path}: differs from the models")
    for path in sorted(out.glob(GENERATED_GLOB)) if out.is_dir() else []:
        if path.name not in rendered:
            problems.append(f"{path}: stale (no such kind any more)")
    return problems


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.check:
        problems = differences(out)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run `anysentry crds` to render the CRDs from anysentry/resources/models.py", file=sys.stderr)
            return 1
        print(f"{out}: CRDs match the models")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    rendered = render_all()
    for name, text in rendered.items():
        path = out / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    for path in sorted(out.glob(GENERATED_GLOB)):
        if path.name not in rendered:
            path.unlink()
            print(f"removed stale {path}")
    return 0
