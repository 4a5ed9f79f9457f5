"""Event ids are SHA-1 hex prefixes (SPEC §4.1): the OpenSSL binding setup.py builds
(`anysentry.events._sha1`) must give exactly hashlib's digits, or ids would change with the build."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

import anysentry
from anysentry.events import ids

IDS_SOURCE = Path(anysentry.__file__).resolve().parent / "events" / "ids.py"

NATIVE = importlib.util.find_spec("anysentry.events._sha1") is not None
TEXTS = ["", "abc", "evt\0src-1\0e-1\0", "x" * 300, "é€😀 ünïcode", "a\udc80b\ud800", "\0" * 64, "y" * 55, "z" * 64]


def hashlib_hex(text: str, length: int) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:length]


@pytest.mark.skipif(not NATIVE, reason="the SHA-1 binding was not built (no OpenSSL headers at install time)")
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("length", [16, 20, 40, 41, 1, 0, -1, -39, -45])
def test_the_native_digest_is_hashlibs(text, length):
    from anysentry.events._sha1 import sha1_hex

    assert sha1_hex(text, length) == hashlib_hex(text, length)
    assert sha1_hex(text) == hashlib_hex(text, 16)


@pytest.mark.skipif(not NATIVE, reason="the SHA-1 binding was not built (no OpenSSL headers at install time)")
def test_the_native_digest_refuses_what_is_not_text():
    from anysentry.events._sha1 import sha1_hex

    with pytest.raises(TypeError):
        sha1_hex(b"bytes")
    with pytest.raises(TypeError):
        sha1_hex()
    with pytest.raises(TypeError):
        sha1_hex("a", "16")


@pytest.mark.skipif(not NATIVE, reason="the SHA-1 binding was not built (no OpenSSL headers at install time)")
def test_ids_use_the_native_digest_when_it_is_built():
    assert ids._NATIVE is not None


def test_ids_are_sha1_over_nul_joined_parts():
    assert ids.hash_id("evt", ["src-1", 42, None, True, 1.0, 2.5]) == \
        "evt_" + hashlib_hex("src-1\x0042\x00\x00true\x001\x002.5\x00", 16)
    assert ids.sha1_hex("a\udc80", 20) == hashlib_hex("a\udc80", 20)


def test_without_the_binding_ids_come_from_hashlib(monkeypatch):
    """The source module with the binding unavailable (an install without OpenSSL's headers)."""
    spec = importlib.util.spec_from_file_location("ids_without_binding", IDS_SOURCE)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "anysentry.events._sha1", None)  # an import of it raises ImportError
    spec.loader.exec_module(module)
    assert module._NATIVE is None
    for text in TEXTS:
        assert module.sha1_hex(text) == hashlib_hex(text, 16)
        assert module.hash_id("evt", [text]) == ids.hash_id("evt", [text])
