"""A human review decision applies to the next events of that agent at ingest (SPEC §7.6, §24.4)."""

import orjson


def tool_line(agent: str) -> str:
    return orjson.dumps({"identity": {"agent": agent, "task": "7", "session": f"{agent}-s"},
                         "event": {"ToolExec": {"pid": 7, "argv": ["git", "status"], "cwd": "/w/repo"}}}).decode()


async def test_review_overrides_classification_at_ingest(api):
    before = await api.data("POST", "/ingest", {"line": tool_line("build-bot")})
    assert before["accepted"] is True
    await api.data("PUT", "/agents/build-bot/review", {"workspacePath": "/w/repo", "decision": "non_agent"})
    discarded = await api.data("POST", "/ingest", {"line": tool_line("build-bot")})
    assert discarded == {"accepted": False, "reason": "unparseable event", "sourceId": None}

    await api.data("PUT", "/agents/coder/review", {"workspacePath": "/w/repo", "decision": "confirmed_agent"})
    confirmed = await api.data("POST", "/ingest", {"line": tool_line("coder")})
    await api.sync()
    listed = await api.data("POST", "/events/list", {"eventId": confirmed["eventId"]})
    attribution = listed["items"][0]["attribution"]
    assert attribution["classification"] == "confirmed_agent" and attribution["source"] == "manual_review"
    assert listed["items"][0]["judgment"]["profile"] == "full"
