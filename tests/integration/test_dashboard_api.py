"""The nine dashboard aggregates (SPEC §14.3) and the live observability stream (§28.3), through
HTTP against a real server, on the data set of `test_events_api.seed` with hand-computed figures.

In the default 3 h window (raw scope, ProcessExit hidden as in the list) there are 15 events:
4 block (curl|bash 76, egress to 169.254.169.254 76, reverse shell 95 — the latest revision of a
re-posted event — and ptrace 76), 2 escalate (/etc/shadow 76, prompt injection 52) and 9 allow,
2500 tokens, in 3 sessions: s-a1 (score 152), s-b1 (128), s-c1 (171, 2 events). The previous 3 h hold
one communication_risk and one data_leak event."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import orjson
import pytest
from aiohttp import web

from anysentry.api import routes_events
from anysentry.events.timefmt import display_time
from test_events_api import S, seed  # noqa: E402 - sibling test module (tests have no packages)


async def agg(api, path: str, **body) -> dict:
    return await api.data("POST", path, body)


async def test_health_card_and_funnel(api):
    await seed(api)
    card = await agg(api, "/top/healthCard")
    # round(clamp(1, 100, 100 - 60*4/15 - 25*2/15)) = round(80.67)
    assert card["healthScore"] == 81 and card["healthStatusText"] == "Good"
    assert card["tokenConsumptionTotal"] == 2.5 and card["tokenConsumptionUnit"] == "K"
    assert len(card["updateTime"]) == 19
    noisy = await agg(api, "/top/healthCard", noise="include")  # + ProcessExit: 100 - 60*4/16 - 25*2/16
    assert noisy["healthScore"] == 82
    agent = await agg(api, "/top/healthCard", scope="agent")  # 11 events, 2 block, 2 escalate
    assert agent["healthScore"] == round(100 - 60 * 2 / 11 - 25 * 2 / 11) == 85
    empty = await agg(api, "/top/healthCard", agentId="nobody")
    assert empty["healthScore"] == 100 and empty["tokenConsumptionTotal"] == 0 and empty["tokenConsumptionUnit"] == ""

    funnel = await agg(api, "/sessions/decisionFunnel")
    assert [(t["tierCode"], t["count"], t["percentage"]) for t in funnel["tiers"]] == [("L1", 15, 100.0), ("L2", 0, 0.0), ("L3", 0, 0.0)]
    assert all(t["tierName"] and t["slaDesc"] for t in funnel["tiers"])
    assert funnel["finalBlock"] == {"count": 4, "percentage": 26.7}
    agent_funnel = await agg(api, "/sessions/decisionFunnel", scope="agent")
    assert agent_funnel["finalBlock"] == {"count": 2, "percentage": 18.2}


async def test_risk_summary_and_breakdown(api):
    await seed(api)
    summary = await agg(api, "/risks/summary")
    assert [(c["riskTypeCode"], c["eventCount"]) for c in summary["summaryCards"]] == [("system", 2), ("communication", 1), ("atomic", 3)]
    breakdown = await agg(api, "/risks/breakdown")
    rows = {i["riskCode"]: (i["eventCount"], i["changeRate"])
            for group in ("systemRisks", "communicationRisks", "singleAgentRisks") for i in breakdown[group]["items"]}
    # every taxonomy entry, even at 0; change vs the previous 3 h
    assert rows == {
        "systemic_risk": (1, 100.0), "privilege_escalation": (1, 100.0),
        "secret_exfil": (0, 0.0), "prompt_injection": (1, 100.0), "communication_risk": (0, -100.0),
        "command_danger": (2, 100.0), "data_leak": (1, 0.0), "model_output_risk": (0, 0.0), "other": (0, 0.0),
        "producer_finding": (0, 0.0), "runtime_failure": (0, 0.0), "runtime_guard_fallback": (0, 0.0),
    }
    assert [breakdown[g]["totalCount"] for g in ("systemRisks", "communicationRisks", "singleAgentRisks")] == [2, 1, 3]
    assert all(i["riskName"] for g in ("systemRisks", "communicationRisks", "singleAgentRisks") for i in breakdown[g]["items"])
    # agent scope drops the unattributed agent c (reverse shell, ptrace)
    agent = await agg(api, "/risks/breakdown", scope="agent")
    agent_rows = {i["riskCode"]: i["eventCount"] for g in ("systemRisks", "communicationRisks", "singleAgentRisks")
                  for i in agent[g]["items"]}
    assert agent_rows["command_danger"] == 1 and agent_rows["privilege_escalation"] == 0 and agent_rows["systemic_risk"] == 1
    # a longer window holds the previous events too: 4 h ago is inside last_1d, nothing before it
    day = await agg(api, "/risks/breakdown", timeType="last_1d")
    day_rows = {i["riskCode"]: (i["eventCount"], i["changeRate"]) for i in day["communicationRisks"]["items"]}
    assert day_rows["communication_risk"] == (1, 100.0)


async def test_highest_risk_session(api):
    seeded = await seed(api)
    top = await agg(api, "/sessions/highestRisk")
    assert top["sessionId"] == "s-c1" and top["userId"] == "u-c" and top["workspacePath"] == "/work/c"
    # min(100, round(mean(95, 76) + 6*sqrt(2)))
    assert top["compositeScore"] == round(85.5 + 6 * math.sqrt(2)) == 94
    assert top["riskLevel"] == "critical" and top["riskLevelText"] == "Critical"  # floor(94/22) = 4
    assert top["lastEventTime"] == display_time(seeded["T"] - 200 * S)
    dims = {d["dimensionCode"]: d["score"] for d in top["riskDimensions"]}
    assert dims == {"command_danger": 1, "prompt_injection": 0, "data_leak": 0, "jailbreak": 0,
                    "communication_risk": 0, "systemic_risk": 1}
    # agent scope: s-a1 (152 over 6 events, 2 risky) beats s-b1 (128)
    agent = await agg(api, "/sessions/highestRisk", scope="agent")
    assert agent["sessionId"] == "s-a1"
    assert agent["compositeScore"] == round(152 / 6 + 6 * math.sqrt(2)) == 34
    assert agent["riskLevel"] == "low"
    assert {d["dimensionCode"]: d["score"] for d in agent["riskDimensions"]}["data_leak"] == 1
    none = await agg(api, "/sessions/highestRisk", agentId="nobody")
    assert none["sessionId"] == "" and none["compositeScore"] == 0 and none["riskLevel"] == "safe"
    assert len(none["riskDimensions"]) == 6


async def test_workspace_distribution_and_observability(api):
    await seed(api)
    dist = await agg(api, "/sessions/workspaceRiskDistribution")
    assert [(w["workspacePath"], w["sessionCount"], w["totalRiskScore"], w["riskLevel"]) for w in dist["list"]] == [
        ("/work/c", 1, 171, "critical"), ("/work/a", 1, 152, "high"), ("/work/b", 1, 128, "high")]
    assert dist["list"][0]["riskLevelText"] == "Critical"

    obs = await agg(api, "/sessions/agentObservability")
    assert obs["health"]["errorRate"] == 40.0  # 6 of 15 non-allow
    assert obs["health"]["decisionLatencyMs"] == 0.0  # synchronous decisions
    assert obs["health"]["heartbeatOk"] is True and obs["system"]["infraHealthy"] is True
    assert obs["behavioral"]["decisionPattern"] == "drift"  # errorRate > 25
    assert obs["behavioral"]["actionRate"] == 1  # one event in the last 60 s
    assert obs["behavioral"]["stateTransitions"] == 1  # the re-posted event's second revision
    assert obs["behavioral"]["goalProgress"] == 0.0  # every session had a block
    assert obs["system"]["agentCount"] == 3
    assert obs["system"]["commThroughput"] == round(6 / 180, 2)  # network + llm events per minute
    calm = await agg(api, "/sessions/agentObservability", agentId="agent-b", verdict="block")
    assert calm["health"]["errorRate"] == 40.0 and calm["system"]["agentCount"] == 1  # verdict is not a dashboard filter


async def test_explainability_and_performance(api):
    seeded = await seed(api)
    scan = await agg(api, "/top/explainabilityScan")
    assert scan["threatInterception"] == 4 and scan["sessionActiveCount"] == 3
    wave = scan["waveSeries"][0]
    assert len(wave["safeSeries"]) == len(wave["riskSeries"]) == 24
    # 3 h in 24 bins of 7.5 min: git status and curl|bash (600 s, 500 s ago) in bin 22, the rest in bin 23
    assert (wave["riskSeries"][22]["value"], wave["riskSeries"][22]["activationCount"]) == (38.0, 1)
    assert (wave["safeSeries"][22]["value"], wave["safeSeries"][22]["activationCount"]) == (62.0, 1)
    assert wave["riskSeries"][23] == {"statTime": wave["safeSeries"][23]["statTime"], "value": 28.8, "activationCount": 5}
    assert wave["safeSeries"][23]["activationCount"] == 8
    assert all(p["value"] == 0 and p["activationCount"] == 0 for p in wave["riskSeries"][:22])
    assert len(wave["safeSeries"][0]["statTime"]) == 19
    assert len((await agg(api, "/top/explainabilityScan", seriesPoints=3))["waveSeries"][0]["riskSeries"]) == 8
    assert len((await agg(api, "/top/explainabilityScan", seriesPoints=1000))["waveSeries"][0]["riskSeries"]) == 72
    assert len((await agg(api, "/top/explainabilityScan", seriesPoints="x"))["waveSeries"][0]["riskSeries"]) == 24

    perf = await agg(api, "/top/performanceCard")
    # 60 buckets of 3 min: 1 event in the last one, 9 in the one before (200-350 s ago; 8 if seeding
    # took over 10 s and the 350 s one slipped a bucket), 4, then 1; avg = 15 / 60
    counts = perf["componentRequestCount"]
    assert counts["current"] == 1 and counts["peak"] in (8, 9) and counts["avg"] == 0.3
    assert perf["tps"]["peak"] == round(counts["peak"] / 180.001, 3) and perf["tps"]["current"] == round(1 / 180.001, 3)
    assert perf["bucketSeconds"] == 180.001
    assert perf["avgLatency"] == {"value": 840.0, "unit": "ms"}
    assert seeded["T"]


async def test_observability_stream(api, monkeypatch):
    monkeypatch.setattr(routes_events, "SSE_INTERVAL_SECS", 0.2)
    await seed(api)
    url = f"{api.url}/security-center/sessions/agentObservability/stream?timeType=last_3h"
    frames = []
    async with api.session.get(url, timeout=aiohttp.ClientTimeout(total=20)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frame: dict = {}
        while len(frames) < 2:
            line = (await asyncio.wait_for(resp.content.readline(), 10)).decode()
            if line == "\n":
                frames.append(frame)
                frame = {}
            else:
                key, _, value = line.rstrip("\n").partition(": ")
                frame[key] = value
    assert [f["id"] for f in frames] == ["1", "2"]
    for f in frames:
        data = orjson.loads(f["data"])  # unwrapped: the AgentObservability object itself
        assert "code" not in data and set(data) >= {"health", "behavioral", "system", "updateTime"}
        assert data["health"]["errorRate"] == 40.0
    # the server is fine after the client went away
    assert (await agg(api, "/sessions/decisionFunnel"))["tiers"][0]["count"] == 15


async def test_stream_ends_when_the_server_shuts_down(tmp_path, chdb_path, store_database):
    from anysentry.api.app import ApiSettings, build_app
    from anysentry.api.auth import ManagementAuth
    from anysentry.api.services import Services
    from anysentry.store.settings import StoreSettings

    settings = StoreSettings(data_dir=str(tmp_path / "data"), chdb_dir=chdb_path, database=store_database, flush_interval=0.05)
    services = Services(store_settings=settings, auth=ManagementAuth(None), state_flush_secs=0.2)
    app = build_app(services, ApiSettings(host="127.0.0.1", port=0, data_dir=tmp_path))
    app[routes_events.SSE_INTERVAL] = 30.0  # a frame now, the next one far away
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/security-center/sessions/agentObservability/stream") as resp:
                first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)
                assert first.startswith(b"id: 1\ndata: {")
                started = asyncio.get_running_loop().time()
                await asyncio.wait_for(runner.cleanup(), 10)
                assert asyncio.get_running_loop().time() - started < 5  # not the 60 s shutdown timeout
                rest = await asyncio.wait_for(resp.content.read(), 5)
                assert b"id: 2" not in rest
    finally:
        services.store.command(f"DROP DATABASE IF EXISTS `{store_database}` SYNC")


@pytest.mark.parametrize("path", list(routes_events.AGGREGATE_PATHS))
async def test_every_aggregate_answers_on_an_empty_store(api, path):
    data = await agg(api, path, timeType="last_7d", scope="agent")
    assert data["updateTime"]
