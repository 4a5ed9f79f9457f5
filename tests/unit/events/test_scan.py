"""The one-pass marker scan setup.py builds (`anysentry.events._scan`) answers exactly what the Python
scan answers: a line it wrongly calls clean would skip redaction and store a secret."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anysentry.events import redact

NATIVE = importlib.util.find_spec("anysentry.events._scan") is not None
needs_native = pytest.mark.skipif(not NATIVE, reason="the marker scan was not built (no C compiler at install time)")
MARKERS = redact._MARKERS


def python_scan(text: str) -> bool:
    return any(marker in text.lower() for marker in MARKERS)


@needs_native
@pytest.mark.parametrize("text, expected", [
    ("", False), ("git status", False), ("Authorization: Bearer x", True), ("X-API-KEY=1", True),
    ("GITHUB_TOKEN", True), ("my SeCrEt", True), ("PASSWD", True), ("credentials.json", True), ("SK-abc", True),
    ("tok", False), ("ke", False), ("sk", False), ("passw"[:-1], False), ("autho", False),
    ("ends with toke", False), ("ends with token", True), ("ke" * 100 + "y", True), ("sk_-", False),
])
def test_the_native_scan_finds_markers_in_any_case(text, expected):
    from anysentry.events._scan import find_marker

    assert find_marker(text, MARKERS) is expected
    assert python_scan(text) is expected


@needs_native
def test_text_that_is_not_ascii_is_left_to_python():
    from anysentry.events._scan import find_marker

    kelvin_key = "\u212aey"  # the Kelvin sign lowers to an ASCII "k": a marker only after lower()
    assert find_marker(kelvin_key, MARKERS) is None
    assert find_marker("é token", MARKERS) is None
    assert redact.has_marker(kelvin_key) is True
    assert redact.has_marker("é tok") is False
    assert redact.redact_text("api\u212aey=hunter2") == "api\u212aey=" + redact.REDACTED


@needs_native
def test_the_native_scan_refuses_bad_markers():
    from anysentry.events._scan import find_marker

    for markers in [("Token",), ("",), ("tökén",), ("x" * 65,), tuple("abcdefghijklmnopqrstuvwxyz0123456789")]:
        with pytest.raises(ValueError):
            find_marker("text", markers)
    for args in [(b"bytes", MARKERS), ("text", list(MARKERS)), ("text",)]:
        with pytest.raises(TypeError):
            find_marker(*args)


@needs_native
@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(st.one_of(st.sampled_from(MARKERS + ("TOKEN", "Key", "pAsSw", "SK-", "secre", "credentia", "autho")),
                          st.text(alphabet=st.characters(max_codepoint=127), max_size=12)), max_size=12))
def test_the_native_scan_agrees_with_python_on_ascii(parts):
    from anysentry.events._scan import find_marker

    text = "".join(parts)
    assert find_marker(text, MARKERS) is python_scan(text)


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=60))
def test_has_marker_is_the_python_scan_on_any_text(text):
    assert redact.has_marker(text) is python_scan(text)
