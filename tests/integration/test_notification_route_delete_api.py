"""`DELETE /notifications/routes/:routeId` outside a cluster: the route goes, its channels stay, the
change is audited, and it needs the management token like every other route write."""

from __future__ import annotations

TOKEN = "admin-token-for-delete-tests"


async def test_delete_removes_the_route_keeps_its_channels_and_is_audited(make_api):
    api = await make_api(admin_token=TOKEN, headers={"X-AnySentry-Admin-Token": TOKEN})
    channel = await api.data("POST", "/notifications/channels",
                             {"name": "ops", "webhookUrl": "http://127.0.0.1:9/hook/SECRET-PATH"}, expect=201)
    route = await api.data("POST", "/notifications/routes", {"name": "pager", "channelIds": [channel["channelId"]]},
                           expect=201)
    other = await api.data("POST", "/notifications/routes", {"name": "other", "channelIds": [channel["channelId"]]},
                           expect=201)

    status, body = await api.request("DELETE", f"/notifications/routes/{route['routeId']}",
                                     headers={"X-AnySentry-Admin-Token": "wrong"})
    assert status == 401, body
    deleted = await api.data("DELETE", f"/notifications/routes/{route['routeId']}")
    assert deleted["routeId"] == route["routeId"] and "webhookUrl" not in deleted

    config = await api.data("GET", "/notifications/config")
    assert [r["routeId"] for r in config["routes"]] == [other["routeId"]]
    assert [c["channelId"] for c in config["channels"]] == [channel["channelId"]]
    assert "SECRET-PATH" not in str(config)

    status, body = await api.request("DELETE", f"/notifications/routes/{route['routeId']}")
    assert status == 404 and body["message"] == "notification route not found"

    audits = (await api.data("POST", "/audit/list", {"resourceId": route["routeId"]}))["items"]
    assert [a["summary"] for a in audits][:1] == ["notification route pager deleted"]
