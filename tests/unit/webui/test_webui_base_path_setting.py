"""How `anysentry ui` reads its public base path (flag or PUBLIC_BASE_PATH): the forms people write
name one prefix, and anything else is refused before the server starts."""

from __future__ import annotations

import pytest

from anysentry.webui.server import normalize_base_path


@pytest.mark.parametrize("given, prefix", [
    ("/anysentry/", "/anysentry"), ("/anysentry", "/anysentry"), ("anysentry", "/anysentry"),
    (" /tools/sec/ ", "/tools/sec"), ("", ""), ("/", ""), (None, ""),
])
def test_the_forms_people_write(given, prefix):
    assert normalize_base_path(given) == prefix


@pytest.mark.parametrize("given", ["/any sentry", "/a?b=1", "/../etc", "//x", "/x#y", "http://host/x"])
def test_what_is_not_a_path_is_refused(given):
    with pytest.raises(ValueError, match="public base path"):
        normalize_base_path(given)
