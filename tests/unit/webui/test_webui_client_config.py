"""How the UI finds the API and its admin token: URLs as operators write them, token files, env."""

from __future__ import annotations

import pytest

from anysentry.cli import main
from anysentry.webui.client import ApiClient, normalize_api_url, read_admin_token, segment


@pytest.mark.parametrize("url", ["http://api:29653", "http://api:29653/", "http://api:29653/security-center",
                                 " http://api:29653/security-center/ "])
def test_api_url_forms_name_the_same_api(url):
    assert normalize_api_url(url) == "http://api:29653"


@pytest.mark.parametrize("url", ["", "api:29653", "ftp://api", "http://"])
def test_bad_api_urls_are_refused_with_the_value(url):
    with pytest.raises(ValueError, match="API URL must look like http://host:port"):
        normalize_api_url(url)


def test_admin_token_from_file_then_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("ANYSENTRY_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ANYSENTRY_MANAGEMENT_TOKEN", raising=False)
    assert read_admin_token() is None
    monkeypatch.setenv("ANYSENTRY_MANAGEMENT_TOKEN", "mgmt")
    assert read_admin_token() == "mgmt"
    monkeypatch.setenv("ANYSENTRY_ADMIN_TOKEN", " admin \n")
    assert read_admin_token() == "admin"  # admin wins, as in the API (SPEC §27)
    secret = tmp_path / "token"
    secret.write_text("from-secret\n")
    assert read_admin_token(str(secret)) == "from-secret"
    assert ApiClient("http://api:1", read_admin_token(str(secret))).has_token
    assert not ApiClient("http://api:1", None).has_token


def test_unusable_token_files_are_explained(tmp_path):
    with pytest.raises(ValueError, match="cannot read admin token file .*missing"):
        read_admin_token(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_admin_token(str(empty))


def test_ids_are_one_url_segment():
    assert segment("inc_1/../x?y") == "inc_1%2F..%2Fx%3Fy"


def test_ui_command_refuses_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["ui", "--api-url", "api:29653"]) == 2
    assert "anysentry ui: API URL must look like http://host:port" in capsys.readouterr().err
    assert main(["ui", "--api-url", "http://api:1", "--admin-token-file", str(tmp_path / "nope")]) == 2
    assert "cannot read admin token file" in capsys.readouterr().err
    assert main(["ui", "--api-url", "http://api:1", "--port", "70000"]) == 2
    assert "--port must be 0..65535" in capsys.readouterr().err
