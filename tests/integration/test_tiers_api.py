"""Deeper tiers over real HTTP (SPEC §9.6, §11.3): a real OpenAI-compatible model server and a fake
investigator run on 127.0.0.1 next to the API; each test sets how they answer.

Covered: pending L1 rows answered at once (ingest latency independent of the model), the final
revision (same eventId, tier Llm/Agent, latest wins), fail-open / fail-closed on timeouts, broken
answers and 500s, L2 → L3 with the session timeline, speculation, queue overflow, incidents that
follow only FINAL decisions, metrics, and model-connection endpoints that never echo a key."""

from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from aiohttp import web

import anysentry.api.app as app_module
from anysentry.api.tiers import attach

KEY = "sk-test-fast-KEY-0123456789abcdef"
L3_KEY = "l3-secret-KEY-abcdef0123456789"
MEM_KEY = "sk-memory-KEY-fedcba9876543210"
AGENT = {"monitored": True, "classification": "confirmed_agent", "confidence": 1, "reason": "test", "source": "test"}


class FakeModels:
    """An OpenAI-compatible `/v1/chat/completions` plus an investigator `/investigate`."""

    def __init__(self):
        self.mode = "block"  # block | allow | escalate | broken | 500
        self.delay = 0.0
        self.reject_json_mode = False  # like endpoints without JSON mode: 400 naming the parameter
        self.l3_mode = "block"
        self.l3_delay = 0.0
        self.chat_requests: list[dict] = []
        self.l3_requests: list[dict] = []
        self.chat_answered_at: list[float] = []
        self.url = ""

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.chat_requests.append({"auth": request.headers.get("Authorization"), "body": body})
        if self.reject_json_mode and "response_format" in body:
            return web.json_response({"error": {"message": "Unknown parameter: response_format"}}, status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        self.chat_answered_at.append(time.monotonic())
        if self.mode == "500":
            return web.Response(status=500, text="upstream exploded")
        if self.mode == "broken":
            content = "Sure, I think it is fine: {verdict: allow"
        else:
            content = "```json\n" + json.dumps({"verdict": self.mode, "severity": "high",
                                                "reason": f"model judged {self.mode}"}) + "\n```"
        return web.json_response({"id": "c1", "object": "chat.completion",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})

    async def investigate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.l3_requests.append({"auth": request.headers.get("Authorization"), "body": body, "at": time.monotonic()})
        if self.l3_delay:
            await asyncio.sleep(self.l3_delay)
        if self.l3_mode == "500":
            return web.Response(status=500)
        return web.json_response({"verdict": self.l3_mode, "severity": "critical", "reason": f"investigation: {self.l3_mode}"})


@pytest.fixture
async def models():
    fake = FakeModels()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_post("/investigate", fake.investigate)
    runner = web.AppRunner(app, shutdown_timeout=0.2)  # a deliberately slow answer is not waited for
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def start(make_api, models, monkeypatch):
    """An API with the deeper tiers attached, the fake model as L2 (and optionally L3)."""
    monkeypatch.setenv("A3S_SENTRY_LLM_API_KEY", KEY)
    monkeypatch.delenv("A3S_SENTRY_L3_API_KEY", raising=False)
    if "models" not in app_module.ROUTE_MODULES:
        monkeypatch.setattr(app_module, "ROUTE_MODULES", app_module.ROUTE_MODULES + ("models",))

    async def go(*, fail_closed=False, timeout_s=10, l3=False, speculate="off", llm=True, concurrency=None,
                 queue_limit=None, shutdown_grace=2.0, **kw):
        if l3:
            monkeypatch.setenv("A3S_SENTRY_L3_API_KEY", L3_KEY)
        policy = {"failClosed": fail_closed, "speculate": speculate,
                  "llm": {"url": models.url + "/v1/chat/completions", "model": "judge-model", "timeoutS": timeout_s} if llm else None,
                  "deepModel": {"url": models.url + "/investigate", "model": "deep", "timeoutS": 5} if l3 else None,
                  "agent": {"bin": "sentry-l3"} if l3 else None}

        def configure(services):
            attach(services, concurrency=concurrency, queue_limit=queue_limit, shutdown_grace=shutdown_grace)
            services.policy.set(policy)

        return await make_api(configure=configure, **kw)

    return go


def observed(path="/etc/shadow", *, attribution=AGENT, session="s1", **kw) -> dict:
    event = {"kind": "FileAccess", "path": path, "agentId": "a1", "sessionId": session, "workspacePath": "/w", **kw}
    if attribution is not None:
        event["attribution"] = attribution
    return event


async def ingest(api, *events) -> list[dict]:
    data = await api.data("POST", "/ingest/events", {"events": list(events)}, expect=201)
    assert data["acceptedEvents"] == len(events), data
    return data["items"]


async def settle(api) -> None:
    await api.services.tiers.drain(timeout=20)
    await api.sync()


async def revisions(api, event_id: str) -> list[dict]:
    store = api.services.store
    return await store.aquery_dicts(
        f"SELECT tier, verdict, severity, reason, decisionStatus, decisionUpdatedAt, judgment, evaluationId, policyVersion "
        f"FROM {store.events_table} WHERE eventId = {{id:String}} ORDER BY decisionUpdatedAt", {"id": event_id})


async def latest(api, event_id: str):
    return (await api.services.store.alatest_events([event_id]))[event_id]


async def incidents(api) -> dict:
    return await api.data("POST", "/incidents/list", {})


async def tier_calls(api) -> dict[tuple[str, str], float]:
    status, text = await api.get("/metrics", root=True)
    assert status == 200
    out = {}
    for labels, value in re.findall(r'^anysentry_tier_calls_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        out[(pairs["tier"], pairs["outcome"])] = float(value)
    return out


async def test_l2_block_is_a_new_final_revision_and_makes_an_incident(start, models):
    api = await start()
    status = await api.data("GET", "/config")
    assert status["status"] == {"l1": True, "l2": True, "l3": False}

    item = (await ingest(api, observed()))[0]
    assert item["decisionStatus"] == "pending" and item["verdict"] == "escalate" and item["tier"] == "Rules"
    assert item["reason"].startswith("read-credentials:") and item["reason"].endswith(" [awaiting L2]")
    # not eligible (unknown identity → l1_only): resolved by L1 alone, the model is never asked
    other = (await ingest(api, observed("/root/.kube/config", attribution=None, session="s-unknown")))[0]
    assert other["decisionStatus"] == "succeeded" and other["reason"].endswith("[unresolved escalation, fail-open]")

    await settle(api)
    assert len(models.chat_requests) == 1
    request = models.chat_requests[0]
    assert request["auth"] == f"Bearer {KEY}"
    assert request["body"]["model"] == "judge-model" and request["body"]["response_format"] == {"type": "json_object"}
    user = request["body"]["messages"][1]["content"]
    assert "<<<UNTRUSTED_EVENT " in user and "/etc/shadow" in user.split("<<<UNTRUSTED_EVENT ")[1]

    rows = await revisions(api, item["eventId"])
    assert [(r["tier"], r["decisionStatus"]) for r in rows] == [("Rules", "pending"), ("Llm", "succeeded")]
    final = await latest(api, item["eventId"])
    assert (final.verdict, final.tier, final.severity, final.decisionStatus) == ("block", "Llm", "high", "succeeded")
    assert final.reason == "L2: model judged block"
    assert final.riskCategory == "data_leak" and final.actionKind == "DenyFile" and final.riskScore == 76
    assert final.judgment["stopReason"] == "decision_final" and final.judgment["l1Verdict"] == "escalate"
    assert final.decisionUpdatedAt > rows[0]["decisionUpdatedAt"]
    assert final.policyVersion == api.services.policy.version and final.evaluationId != rows[0]["evaluationId"]

    status, listed = await api.post("/events/list", {"eventId": item["eventId"]})
    if status == 200:  # the events area may land separately: when present, it shows the latest revision only
        items = listed["data"]["items"]
        assert len(items) == 1 and items[0]["tier"] == "Llm" and items[0]["reason"] == "L2: model judged block"

    listing = await incidents(api)
    by_event = {i.get("lastEventId"): i for i in listing["items"]}
    assert by_event[item["eventId"]]["description"].endswith("(L2: model judged block)")
    assert other["eventId"] in by_event  # the L1-final escalation is an incident as before
    assert listing["total"] == 2
    assert (await tier_calls(api))[("L2", "ok")] == 1


async def test_l2_allow_makes_no_incident(start, models):
    models.mode = "allow"
    models.reject_json_mode = True
    api = await start()
    item = (await ingest(api, observed()))[0]
    assert item["decisionStatus"] == "pending"
    await settle(api)
    # the endpoint has no JSON mode: asked once more without it, within the same call
    assert ["response_format" in r["body"] for r in models.chat_requests] == [True, False]
    final = await latest(api, item["eventId"])
    assert (final.verdict, final.tier, final.severity, final.riskCategory, final.riskScore) == ("allow", "Llm", "info", "benign", 0)
    assert final.reason == "L2: model judged allow" and final.actionKind == ""
    # the ops engine saw neither the pending L1 row nor a non-allow final: nothing to open
    assert (await incidents(api))["total"] == 0
    alerts = await api.data("POST", "/alerts/list", {})
    assert alerts["total"] == 0


async def test_slow_model_does_not_slow_ingest(start, models):
    models.delay = 2.0
    api = await start(timeout_s=10)
    began = time.monotonic()
    item = (await ingest(api, observed()))[0]
    ingest_latency = time.monotonic() - began
    assert item["decisionStatus"] == "pending"
    assert ingest_latency < models.delay / 4, ingest_latency  # answered long before the model
    await settle(api)
    assert time.monotonic() - began >= models.delay * 0.9
    final = await latest(api, item["eventId"])
    assert final.tier == "Llm" and final.verdict == "block"


async def test_shutdown_resolves_unfinished_judgments(start, models):
    models.delay = 5.0
    api = await start(timeout_s=30, shutdown_grace=0.2)
    item = (await ingest(api, observed()))[0]
    await asyncio.sleep(0.2)
    await api.services.tiers.close()  # what the shutdown hook does; the writer is still running
    await api.sync()
    final = await latest(api, item["eventId"])
    assert final.decisionStatus == "succeeded" and final.verdict == "escalate"
    assert final.reason.startswith("L2 judgment failed: service stopped before an answer [unresolved escalation, fail-open]")
    assert api.services.tiers.in_flight == 0
    assert (await incidents(api))["total"] == 1


async def test_timeout_fail_closed_blocks(start, models):
    models.delay = 1.6
    api = await start(fail_closed=True, timeout_s=1)
    item = (await ingest(api, observed()))[0]
    await settle(api)
    final = await latest(api, item["eventId"])
    assert (final.verdict, final.tier, final.decisionStatus) == ("block", "Rules", "succeeded")
    assert final.reason.startswith("L2 judgment timeout: no answer within 1s [unresolved escalation, fail-closed]; L1: read-credentials:")
    assert final.judgment["stopReason"] == "l2_timeout" and final.severity == "high"
    assert (await tier_calls(api))[("L2", "timeout")] == 1
    assert (await incidents(api))["total"] == 1  # the fail-closed block is final: it is an incident


async def test_broken_answers_and_errors_fail_open(start, models):
    api = await start()
    models.mode = "broken"
    broken = (await ingest(api, observed(session="s-broken")))[0]
    await settle(api)
    models.mode = "500"
    failed = (await ingest(api, observed(session="s-500")))[0]
    await settle(api)

    first = await latest(api, broken["eventId"])
    assert first.verdict == "escalate" and first.tier == "Rules" and first.decisionStatus == "succeeded"
    assert first.reason.startswith("L2 judgment failed: answer is not a JSON object [unresolved escalation, fail-open]; L1: ")
    assert first.judgment["stopReason"] == "l2_failed"
    second = await latest(api, failed["eventId"])
    assert second.verdict == "escalate"  # never allow
    assert second.reason.startswith("L2 judgment failed: model endpoint answered HTTP 500 [unresolved escalation, fail-open]")
    assert "upstream exploded" not in second.reason
    calls = await tier_calls(api)
    assert calls[("L2", "parse_error")] == 1 and calls[("L2", "error")] == 1
    assert (await incidents(api))["total"] == 2  # fail-open escalations stay visible, as incidents


async def test_l2_escalation_goes_to_l3_with_the_session_timeline(start, models):
    models.mode = "escalate"
    api = await start(l3=True)
    assert (await api.data("GET", "/config"))["status"] == {"l1": True, "l2": True, "l3": True}
    await ingest(api, {"kind": "tool", "command": "git status", "agentId": "a1", "sessionId": "s1", "workspacePath": "/w",
                       "attribution": AGENT, "at": int(time.time() * 1000) - 5000})
    item = (await ingest(api, observed()))[0]
    await settle(api)

    assert len(models.l3_requests) == 1
    request = models.l3_requests[0]
    assert request["auth"] == f"Bearer {L3_KEY}"
    body = request["body"]
    assert body["event"]["eventId"] == item["eventId"] and body["event"]["subject"] == "file /etc/shadow"
    assert body["l2Opinion"] == {"verdict": "escalate", "severity": "high", "reason": "L2: model judged escalate"}
    assert [t["subject"] for t in body["timeline"]] == ["git status"]

    rows = await revisions(api, item["eventId"])
    assert [(r["tier"], r["decisionStatus"]) for r in rows] == [("Rules", "pending"), ("Llm", "pending"), ("Agent", "succeeded")]
    assert rows[1]["reason"] == "L2: model judged escalate [awaiting L3]"
    assert json.loads(rows[1]["judgment"])["stopReason"] == "l2_escalated"
    final = await latest(api, item["eventId"])
    assert (final.verdict, final.tier, final.severity, final.reason) == ("block", "Agent", "critical", "L3: investigation: block")
    calls = await tier_calls(api)
    assert calls[("L2", "ok")] == 1 and calls[("L3", "ok")] == 1
    incident = (await incidents(api))["items"][0]
    assert incident["eventCount"] == 1 and incident["severity"] == "critical"  # only the final revision counted

    # L3 is terminal: an escalate answer is coerced by the fail mode (fail-open here)
    models.l3_mode = "escalate"
    again = (await ingest(api, observed("/home/agent/.ssh/id_ed25519")))[0]
    await settle(api)
    coerced = await latest(api, again["eventId"])
    assert coerced.verdict == "escalate" and coerced.tier == "Agent"
    assert coerced.reason == "L3: investigation: escalate [unresolved escalation, fail-open]"


async def test_speculation_asks_l2_and_l3_together(start, models):
    models.mode = "escalate"
    models.delay = 0.6
    api = await start(l3=True, speculate="medium")
    item = (await ingest(api, observed()))[0]  # read-credentials is high ≥ medium
    await settle(api)
    assert len(models.chat_requests) == 1 and len(models.l3_requests) == 1
    assert models.l3_requests[0]["at"] < models.chat_answered_at[0]  # L3 was asked before L2 answered
    assert models.l3_requests[0]["body"]["l2Opinion"] is None
    final = await latest(api, item["eventId"])
    assert final.tier == "Agent" and final.verdict == "block"

    # L2 deciding first wins; the speculative L3 answer is dropped
    models.mode = "allow"
    ev = (await ingest(api, {"kind": "tool", "command": "bash -c eval $PAYLOAD", "agentId": "a1", "sessionId": "s2",
                             "workspacePath": "/w", "attribution": AGENT}))[0]  # rce-primitive: medium ≥ medium
    await settle(api)
    assert len(models.l3_requests) == 2
    decided = await latest(api, ev["eventId"])
    assert (decided.tier, decided.verdict) == ("Llm", "allow")

    # below the floor: no speculation, and L3 is not asked when L2 decides
    api.services.policy.set({**api.services.policy.policy, "speculate": "high"})
    await ingest(api, {"kind": "tool", "command": "bash -c eval $OTHER", "agentId": "a1", "sessionId": "s3",
                       "workspacePath": "/w", "attribution": AGENT})
    await settle(api)
    assert len(models.l3_requests) == 2 and len(models.chat_requests) == 3


async def test_full_queue_resolves_by_fail_mode_at_once(start, models):
    models.delay = 1.0
    api = await start(concurrency=1, queue_limit=1)
    items = await ingest(api, observed(session="q1"), observed(session="q2"), observed(session="q3"))
    assert [i["decisionStatus"] for i in items] == ["pending", "succeeded", "succeeded"]
    assert items[1]["verdict"] == "escalate"
    assert items[1]["reason"].startswith("L2 judgment failed: queue full (1 events awaiting judgment) [unresolved escalation, fail-open]")
    await settle(api)
    assert (await tier_calls(api))[("L2", "overflow")] == 2
    assert len(await revisions(api, items[1]["eventId"])) == 1  # resolved before the write: one row


async def test_model_connection_endpoints_never_echo_the_key(start, models, monkeypatch):
    monkeypatch.delenv("A3S_SENTRY_LLM_API_KEY")
    token = "admin-token-for-tests"
    api = await start(llm=False, admin_token=token)
    admin = {"X-AnySentry-Admin-Token": token}
    seen: list[str] = []

    async def call(method, path, body=None, expect=200, headers=admin):
        status, answer = await api.request(method, path, json=body, headers=headers)
        seen.append(json.dumps(answer))
        assert status == expect, (status, answer)
        return answer["data"] if isinstance(answer, dict) and "data" in answer else answer

    assert (await api.get("/config/model-connections"))[0] == 401
    view = await call("GET", "/config/model-connections")
    assert view["status"]["l2"] is False and view["connections"]["fast_review"]["configured"] is False

    item = (await ingest(api, observed()))[0]  # no L2 configured: L1 resolves it
    assert item["decisionStatus"] == "succeeded" and models.chat_requests == []

    tested = await call("POST", "/config/model-connections/test",
                        {"profile": "fast_review", "url": models.url + "/v1/", "model": "judge-model", "apiKey": MEM_KEY, "timeoutS": 5})
    assert tested["ok"] is True and tested["testToken"] and tested["expiresAt"] and tested["latencyMs"] >= 0
    assert models.chat_requests[-1]["auth"] == f"Bearer {MEM_KEY}"
    bad = await call("POST", "/config/model-connections/test",
                     {"profile": "fast_review", "url": "http://127.0.0.1:1/v1", "apiKey": MEM_KEY, "timeoutS": 2})
    assert bad["ok"] is False and bad["testToken"] is None and bad["error"]
    await call("POST", "/config/model-connections/test", {"profile": "nope", "url": models.url}, expect=400)
    await call("PUT", "/config/model-connections/deep_investigation", {"testToken": tested["testToken"]}, expect=400)

    active = await call("PUT", "/config/model-connections/fast_review", {"testToken": tested["testToken"]})
    fast = active["connections"]["fast_review"]
    assert fast["configured"] is True and fast["source"] == "memory" and fast["keySource"] == "memory"
    assert fast["url"] == models.url + "/v1" and active["status"]["l2"] is True
    await call("PUT", "/config/model-connections/fast_review", {"testToken": tested["testToken"]}, expect=400)  # single use
    config = await call("GET", "/config")
    assert config["status"]["l2"] is True and config["connections"]["fast_review"]["keyConfigured"] is True

    judged = (await ingest(api, observed(session="s2")))[0]
    assert judged["decisionStatus"] == "pending"
    await settle(api)
    assert models.chat_requests[-1]["auth"] == f"Bearer {MEM_KEY}"
    assert (await latest(api, judged["eventId"])).tier == "Llm"

    cleared = await call("POST", "/config/model-connections/fast_review/clear")
    assert cleared["status"]["l2"] is False and cleared["connections"]["fast_review"]["configured"] is False
    health = await call("GET", "/healthz")
    assert health["policy"]["l2"] is False
    audit_actions = [r["action"] for r in api.services.audit.records]
    assert {"model_connection.tested", "model_connection.activated", "model_connection.cleared"} <= set(audit_actions)

    for text in seen + [json.dumps(list(api.services.audit.records))]:
        assert MEM_KEY not in text and KEY not in text
    stored = await api.services.store.aquery_rows(f"SELECT count() FROM {api.services.store.events_table} "
                                                  "WHERE position(reason, {k:String}) > 0 OR position(attributes, {k:String}) > 0",
                                                  {"k": MEM_KEY})
    assert stored[0][0] == 0
