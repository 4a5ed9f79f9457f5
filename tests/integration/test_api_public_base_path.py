"""The API behind an ingress at a sub-path (SPEC §3.1 PUBLIC_BASE_PATH): a real server on 127.0.0.1
answers at `<prefix>/security-center/...` (prefix stripped before routing) and, for in-cluster clients
calling the Service directly, still at `/security-center/...` — same services, JSON errors, CORS and
management auth on both, started once. A value that is not a path is refused at start-up."""

from __future__ import annotations

import orjson
import pytest

from anysentry.api.app import ApiSettings, SettingsError

TOKEN = "prefix-admin-token"
PREFIX = "/anysentry"
LINE = orjson.dumps({"identity": {"agent": "py", "task": "1"},
                     "event": {"Egress": {"pid": 1, "peer": "169.254.169.254", "port": 80}}}).decode()


@pytest.fixture
def start_api(make_api):
    """Start a real API with the given PUBLIC_BASE_PATH; returns (session, services, startups counter)."""

    async def start(public_base_path: str):
        startups: list = []

        async def count_startup(_services) -> None:
            startups.append(1)

        client = await make_api(admin_token=TOKEN, public_base_path=public_base_path,
                                configure=lambda services: services.startup_hooks.append(count_startup))
        return client.session, client.services, startups

    return start


async def call(session, method: str, path: str, json=None, headers=None):
    async with session.request(method, path, json=json, headers=headers) as resp:
        body = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, body, resp.headers


@pytest.mark.parametrize("configured", ["/anysentry/", "/anysentry"])
async def test_the_api_answers_with_and_without_the_prefix(start_api, configured):
    session, services, startups = await start_api(configured)
    admin = {"X-AnySentry-Admin-Token": TOKEN}
    bases = {f"{PREFIX}/security-center": "via-ingress", "/security-center": "via-service"}
    for base, source in bases.items():
        status, body, headers = await call(session, "GET", f"{base}/healthz")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*", (base, body)

        status, body, _ = await call(session, "POST", f"{base}/ingest", {"line": LINE, "collectorId": "node-a"})
        assert status == 201 and body["data"]["accepted"] is True and body["data"]["verdict"] == "block", (base, body)

        # management: the token is required on both paths, and with it the route works
        status, body, _ = await call(session, "POST", f"{base}/sources", {"name": source})
        assert (status, body["message"], body["error"]) == (401, "management token required", "Unauthorized")
        status, body, _ = await call(session, "POST", f"{base}/sources", {"name": source}, headers=admin)
        assert status == 201, (base, body)

    # one set of services behind both paths: each sees the other's writes
    for base in bases:
        status, body, _ = await call(session, "POST", f"{base}/sources/list", {}, headers=admin)
        assert set(bases.values()) <= {s["name"] for s in body["data"]["items"]}, (base, body)
    # the probes' root paths are also stripped of the prefix
    assert (await call(session, "GET", f"{PREFIX}/readyz"))[0] == 200
    assert startups == [1]


async def test_unknown_paths_under_the_prefix_are_json_errors(start_api):
    session, _, _ = await start_api("/anysentry/")
    for path in (f"{PREFIX}/security-center/no-such-route", f"{PREFIX}/nothing", PREFIX, "/elsewhere/security-center/healthz"):
        status, body, _ = await call(session, "GET", path)
        assert status == 404 and body == {"statusCode": 404, "message": "route not found", "error": "Not Found"}, path
    status, body, headers = await call(session, "GET", f"{PREFIX}/security-center/ingest")
    assert status == 405 and body["statusCode"] == 405 and "POST" in headers["Allow"]
    # a browser's CORS preflight under the prefix
    status, _, headers = await call(session, "OPTIONS", f"{PREFIX}/security-center/ingest")
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"


async def test_without_a_prefix_nothing_answers_under_one(start_api):
    session, _, _ = await start_api("")
    assert (await call(session, "GET", "/security-center/healthz"))[0] == 200
    status, body, _ = await call(session, "GET", f"{PREFIX}/security-center/healthz")
    assert status == 404 and body["statusCode"] == 404 and body["error"] == "Not Found"


def test_the_prefix_follows_the_crd_rule():
    for given in ("/anysentry/", "/anysentry", " /anysentry/ ", "/tools/security/"):
        assert ApiSettings(public_base_path=given).public_base_path == given.strip().rstrip("/")
    for given in ("", "/"):
        assert ApiSettings(public_base_path=given).public_base_path == ""
    for bad in ("anysentry", "/../admin", "/a?b=1", "//a", "/a b", "/.hidden", "/security-center", "/security-center/x"):
        with pytest.raises(SettingsError, match="PUBLIC_BASE_PATH"):
            ApiSettings(public_base_path=bad)


def test_the_prefix_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("PUBLIC_BASE_PATH", "/anysentry/")
    assert ApiSettings.from_env().public_base_path == "/anysentry"
    monkeypatch.setenv("PUBLIC_BASE_PATH", "/../x")
    with pytest.raises(SettingsError):
        ApiSettings.from_env()
