"""Producer formats → the canonical, redacted event `anysentry.agent_event.v1`.

The observer-line normaliser (observer, redact, ids, kinds, timefmt) may be compiled with mypyc by
setup.py. A compiled module is found before its source, so when any of these sources differs from
what was compiled (an edit since the last install), all of them are imported from source instead:
they call each other natively, so a stale one must not serve a fresh one."""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import json
import sys
from pathlib import Path

_HERE = Path(__file__).parent


def _stale_compiled() -> dict[str, Path]:
    """{module name: source} of the compiled group when a source changed after the build, else {}."""
    try:
        built = json.loads((_HERE / "_normaliser.json").read_text())
        changed = any(hashlib.sha256((_HERE / f"{name}.py").read_bytes()).hexdigest() != digest
                      for name, digest in built.items())
    except (OSError, ValueError, AttributeError):
        return {}
    return {f"{__name__}.{name}": _HERE / f"{name}.py" for name in built} if changed else {}


class _SourcesFirst(importlib.abc.MetaPathFinder):
    def __init__(self, sources: dict[str, Path]):
        self.sources = sources

    def find_spec(self, name, path=None, target=None):
        source = self.sources.get(name)
        return importlib.util.spec_from_file_location(name, source) if source else None


_stale = _stale_compiled()
if _stale:
    sys.meta_path.insert(0, _SourcesFirst(_stale))
