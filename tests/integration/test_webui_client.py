"""The UI's API client against a real API on 127.0.0.1: data unwrapped, every failure one readable
`ApiError` (a refused token, an unknown id, an API that is not there)."""

from __future__ import annotations

import socket

import pytest

from anysentry.webui.client import ApiClient, ApiError

TOKEN = "webui-client-token"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_reads_unwrap_data_and_actions_carry_the_admin_token(make_api):
    api = await make_api(admin_token=TOKEN)
    client = ApiClient(api.url + "/security-center/", TOKEN)
    try:
        health = await client.get("/healthz")
        assert health["status"] == "ok" and health["managementAuth"] == {"enabled": True}
        listed = await client.post("/incidents/list", {"status": "all"})
        assert listed["items"] == [] and listed["summary"] == {"open": 0, "acknowledged": 0, "resolved": 0}
        with pytest.raises(ApiError) as unknown:  # the token passed (no 401), the id is unknown
            await client.put("/incidents/inc_missing", {"status": "resolved"})
        assert unknown.value.status == 404
        assert str(unknown.value) == "incident not found (HTTP 404 on PUT /incidents/inc_missing)"
    finally:
        await client.close()


async def test_missing_or_wrong_token_is_explained(make_api):
    api = await make_api(admin_token=TOKEN)
    for token, message in ((None, "the API requires the admin token for this action"),
                           ("wrong", "the API rejected the UI's admin token")):
        client = ApiClient(api.url, token)
        try:
            with pytest.raises(ApiError, match=message) as refused:
                await client.put("/incidents/inc_missing", {"status": "resolved"})
            assert refused.value.status == 401
            assert (await client.get("/healthz"))["status"] == "ok"  # reads need no token
        finally:
            await client.close()


async def test_an_absent_api_is_reported_not_raised_raw():
    port = closed_port()
    client = ApiClient(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(ApiError, match=f"the API at http://127.0.0.1:{port} is unreachable") as gone:
            await client.get("/healthz")
        assert gone.value.status == 0
    finally:
        await client.close()
