"""POST /ingest/events generic JSON bodies (SPEC §8.3): body forms, defaults, kinds, bad input.

Every item goes through `observer.normalize(item, default_source="api")`: the assertions are on the
canonical `AgentEvent` the API would store, not on intermediate dicts."""

from __future__ import annotations

import orjson
import pytest

from anysentry.events import generic
from anysentry.events.errors import BodyError
from anysentry.events.generic import MAX_EVENTS, parse_events_body
from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent, Observation, ParsedBody, Rejection, SourceContext
from anysentry.events.observer import normalize

NOW = 1_782_727_200_000  # 2026-06-29T10:00:00Z
PLATFORM_TOKEN = "ansrc_PLATFORMtokenAAAAAAAAAAAAAAAAAAAAAAAA"

# An agent platform ("relay") posting one run of a payments bot: a shell tool call, an LLM call,
# a file read of a dotenv file, metadata-service egress, a DNS lookup, a finding, a verifier warning.
PLATFORM_BATCH = {
    "sourceName": "relay-agents",
    "token": PLATFORM_TOKEN,
    "collectorId": "relay-gw-1",
    "nodeName": "gke-pool-a-1",
    "workspacePath": "acme/payments-bot",
    "agentId": "payments-bot",
    "sessionId": "sess-42",
    "events": [
        {"id": "relay-0001", "kind": "tool_exec", "at": "2026-06-29T10:00:00.000Z", "pid": 4121,
         "command": "git clone https://github.com/acme/payments.git", "cwd": "/workspace",
         "attributes": {"tool.name": "shell", "llm.usage.total_tokens": 42}},
        {"id": "relay-0002", "kind": "llm_api", "at": 1_782_727_201_000, "endpoint": "api.openai.com",
         "promptTokens": 812, "completionTokens": 96, "latencyMs": 1420.5, "attributes": {"model": "gpt-4.1"}},
        {"id": "relay-0003", "kind": "file_read", "at": 1_782_727_202, "path": "/workspace/payments/.env",
         "attributes": {"tool.name": "read_file"}},
        {"id": "relay-0004", "eventKind": "NetworkEgress", "peer": "169.254.169.254", "port": 80},
        {"id": "relay-0005", "kind": "dns", "query": "pastebin.com", "agentId": "payments-bot-sub"},
        {"id": "relay-0006", "kind": "SecurityFinding", "status": "prompt-injection",
         "attributes": {"finding.rule": "pi-001"}},
        {"id": "relay-0007", "kind": "verifier-warning", "runtimeKind": "unverified-plan"},
        {"id": "relay-0008", "kind": "process_exit", "status": "exited", "exitCode": 0},
    ],
}


def events_of(parsed: ParsedBody, source: SourceContext | None = None) -> list[AgentEvent | Rejection]:
    out: list[AgentEvent | Rejection] = []
    for item in parsed.items:
        if isinstance(item, Rejection):
            out.append(item)
            continue
        result = normalize(item, source=source, default_source="api", now=NOW)
        assert isinstance(result, (Observation, Rejection)), result
        if isinstance(result, Observation):
            orjson.dumps(result.event)  # every stored event must serialise
            out.append(result.event)
        else:
            out.append(result)
    return out


def one_event(body, **kw) -> AgentEvent:
    events = events_of(parse_events_body(body, **kw))
    assert len(events) == 1, events
    assert isinstance(events[0], AgentEvent), events[0]
    return events[0]


def dumps(value) -> bytes:
    return orjson.dumps(value)


# ---------------------------------------------------------------- a realistic platform batch

def test_platform_batch_becomes_canonical_events():
    source = SourceContext(sourceId="src_relay")
    parsed = parse_events_body(dumps(PLATFORM_BATCH))
    assert parsed.request == {
        "sourceName": "relay-agents", "token": PLATFORM_TOKEN, "collectorId": "relay-gw-1", "nodeName": "gke-pool-a-1",
        "workspacePath": "acme/payments-bot", "agentId": "payments-bot", "sessionId": "sess-42", "sourceType": "custom",
    }
    events = events_of(parsed, source)
    assert all(isinstance(e, AgentEvent) for e in events)
    assert [(e.eventKind, e.eventCategory) for e in events] == [
        ("ToolExec", "tool"), ("LlmApi", "llm"), ("FileAccess", "file"), ("Egress", "network"),
        ("Dns", "network"), ("SecurityAction", "security"), ("RuntimeEvent", "runtime"), ("ProcessExit", "process"),
    ]
    tool, llm, file_read, egress, dns, finding, warning, _exit = events
    for event in events:
        assert event.source == "api"
        assert event.workspacePath == "acme/payments-bot"  # request default beats the tool's cwd
        assert event.sessionId == "sess-42"
        assert event.collectorId == "relay-gw-1"
        assert event.attributes["collectorId"] == "relay-gw-1"
        assert event.attributes["collectorNode"] == "gke-pool-a-1"
        assert event.sourceId == "src_relay"
        assert event.eventId == hash_id("evt", ["src_relay", event.sourceEventId])
        assert PLATFORM_TOKEN not in event.to_json().decode()
    assert [e.sourceEventId for e in events] == [f"relay-000{i}" for i in range(1, 9)]
    assert dns.agentId == "payments-bot-sub" and tool.agentId == "payments-bot"

    assert tool.at == NOW
    assert tool.subject == "git clone https://github.com/acme/payments.git"
    assert tool.attributes["argv"] == tool.subject
    assert tool.attributes["tool.name"] == "shell"
    assert tool.attributes["llm.usage.total_tokens"] == 42
    assert tool.attributes["pid"] == 4121 and tool.attributes["cwd"] == "/workspace"

    assert llm.at == NOW + 1000
    assert llm.tokenCount == 908 and llm.latencyMs == 1420.5
    assert llm.attributes["model"] == "gpt-4.1" and llm.attributes["sni"] == "api.openai.com"

    assert file_read.at == NOW + 2000  # seconds → ms
    assert file_read.subject == "file /workspace/payments/.env"
    assert egress.subject == "egress → 169.254.169.254:80"
    assert dns.subject == "dns pastebin.com"
    assert finding.subject == "security prompt-injection"
    assert finding.attributes["finding.rule"] == "pi-001"
    assert warning.attributes["kind"] == "unverified-plan"


def test_reposting_the_same_ids_gives_the_same_event_ids():
    first = events_of(parse_events_body(dumps(PLATFORM_BATCH)), SourceContext(sourceId="src_relay"))
    again = events_of(parse_events_body(dumps(PLATFORM_BATCH)), SourceContext(sourceId="src_relay"))
    assert [e.eventId for e in first] == [e.eventId for e in again]
    other_source = events_of(parse_events_body(dumps(PLATFORM_BATCH)), SourceContext(sourceId="src_other"))
    assert not {e.eventId for e in first} & {e.eventId for e in other_source}


def test_events_without_ids_are_deterministic_per_content():
    body = dumps({"events": [{"kind": "dns", "query": "a.example", "at": NOW}, {"kind": "dns", "query": "b.example", "at": NOW}]})
    a = events_of(parse_events_body(body))
    b = events_of(parse_events_body(body))
    assert [e.eventId for e in a] == [e.eventId for e in b]
    assert a[0].eventId != a[1].eventId
    assert a[0].sourceEventId == ""


# ---------------------------------------------------------------- body forms

TOOL_EVENT = {"kind": "tool", "command": ["kubectl", "get", "secrets", "-A"], "agentId": "ops-agent"}


@pytest.mark.parametrize(
    "body",
    [
        dumps({"events": [TOOL_EVENT]}),
        dumps({"event": TOOL_EVENT}),
        dumps(TOOL_EVENT),
        dumps([TOOL_EVENT]),
        dumps([{"event": TOOL_EVENT}]),
        dumps([{"events": [TOOL_EVENT]}]),
        dumps(TOOL_EVENT).decode(),
        bytearray(dumps(TOOL_EVENT)),
        memoryview(dumps(TOOL_EVENT)),
        {"event": TOOL_EVENT},
        [TOOL_EVENT],
        b"\xef\xbb\xbf" + dumps(TOOL_EVENT),
        b"\n  " + dumps(TOOL_EVENT) + b"\n",
    ],
    ids=["events", "event", "top-level", "array-of-events", "array-of-event-requests", "array-of-batches", "str",
         "bytearray", "memoryview", "parsed-dict", "parsed-list", "bom", "whitespace"],
)
def test_every_body_form_gives_the_same_event(body):
    event = one_event(body)
    assert (event.eventKind, event.eventCategory, event.agentId) == ("ToolExec", "tool", "ops-agent")
    assert event.subject == "kubectl get secrets -A"


@pytest.mark.parametrize("marker", generic.EVENT_MARKERS)
def test_each_marker_makes_the_body_one_event(marker):
    values = {"attributes": {"k": "v"}, "argv": ["ls"], "command": "ls"}
    event = one_event(dumps({marker: values.get(marker, "x"), "sourceName": "edge"}))
    assert event.source == "api"


@pytest.mark.parametrize("body", [b"", b"   \n\t", "", "  ", b"{}", b"[]", b"null", b"\xef\xbb\xbf", None, {}, [], "{}"])
def test_empty_bodies_have_no_items(body):
    parsed = parse_events_body(body)
    assert parsed.items == []
    assert parsed.request == {"sourceType": "custom"}


def test_request_fields_alone_are_not_an_event():
    parsed = parse_events_body(dumps({"sourceId": "src_1", "token": "ansrc_x", "agentId": "a"}))
    assert parsed.items == []
    assert parsed.request == {"sourceId": "src_1", "token": "ansrc_x", "agentId": "a", "sourceType": "custom"}


def test_an_object_with_no_event_is_rejected_with_a_reason():
    parsed = parse_events_body(dumps({"action": "opened", "pull_request": {"number": 7}}))
    assert parsed.items == [Rejection(generic.NO_EVENT, 0)]


def test_events_wins_over_event_and_top_level_fields():
    parsed = parse_events_body(dumps({"events": [{"kind": "dns", "query": "a"}], "event": {"kind": "tool"}, "kind": "file"}))
    assert [e.eventKind for e in events_of(parsed)] == ["Dns"]


def test_top_level_array_elements_stand_alone_and_the_first_gives_the_source():
    body = [
        {"sourceName": "first", "token": "ansrc_first", "agentId": "a1", "events": [{"kind": "dns", "query": "x"}, {"kind": "dns", "query": "y"}]},
        7,
        {"sourceName": "second", "token": "ansrc_second", "agentId": "a2", "event": {"kind": "dns", "query": "z"}},
        "text",
        {},
        {"kind": "file", "path": "/etc/passwd"},
        {"token": "ansrc_only_request_fields"},
        None,
    ]
    parsed = parse_events_body(dumps(body))
    assert parsed.request["sourceName"] == "first" and parsed.request["token"] == "ansrc_first"
    events = events_of(parsed)
    assert [e.agentId if isinstance(e, AgentEvent) else e.reason for e in events] == [
        "a1", "a1", "invalid batch item", "a2", "invalid batch item", "invalid batch item", "api-agent", "invalid batch item",
    ]
    assert [e.index for e in events if isinstance(e, Rejection)] == [2, 4, 5, 7]


def test_first_object_element_gives_the_source_when_the_first_element_is_garbage():
    parsed = parse_events_body(dumps([1, {"sourceName": "s", "kind": "dns", "query": "q"}]))
    assert parsed.request["sourceName"] == "s"
    assert [type(i).__name__ for i in parsed.items] == ["Rejection", "dict"]


# ---------------------------------------------------------------- batch limit

def test_more_than_500_events_rejects_the_rest_with_a_clear_reason():
    body = dumps({"events": [{"kind": "dns", "query": f"h{i}.example"} for i in range(620)]})
    parsed = parse_events_body(body)
    assert len(parsed.items) == 620
    assert all(isinstance(i, dict) for i in parsed.items[:MAX_EVENTS])
    extra = parsed.items[MAX_EVENTS:]
    assert all(isinstance(r, Rejection) and r.reason == generic.TOO_MANY for r in extra)
    assert [r.index for r in extra] == list(range(MAX_EVENTS, 620))
    assert "500" in generic.TOO_MANY


def test_the_limit_counts_across_a_top_level_array():
    body = dumps([{"events": [{"kind": "dns", "query": "a"}] * 300}, {"events": [{"kind": "dns", "query": "b"}] * 300}])
    parsed = parse_events_body(body)
    assert len(parsed.items) == 600
    assert sum(isinstance(i, Rejection) for i in parsed.items) == 100


# ---------------------------------------------------------------- defaults precedence

def test_explicit_event_field_beats_request_default_beats_resolved_source():
    body = {
        "workspacePath": "req/ws", "collectorId": "req-col", "agentId": "req-agent", "userId": "req-user",
        "traceId": "req-trace", "runId": "req-run", "taskId": "req-task", "nodeName": "req-node",
        "events": [
            {"kind": "dns", "query": "a", "workspacePath": "ev/ws", "collectorId": "ev-col", "agentId": "ev-agent",
             "userId": "ev-user", "traceId": "ev-trace", "runId": "ev-run", "taskId": "ev-task", "nodeName": "ev-node"},
            {"kind": "dns", "query": "b"},
        ],
    }
    source = SourceContext(sourceId="src_1", workspacePath="src/ws", collectorId="src-col")
    explicit, defaulted = events_of(parse_events_body(dumps(body)), source)
    assert (explicit.workspacePath, explicit.collectorId, explicit.agentId, explicit.userId) == ("ev/ws", "ev-col", "ev-agent", "ev-user")
    assert (explicit.traceId, explicit.runId, explicit.taskId, explicit.attributes["collectorNode"]) == ("ev-trace", "ev-run", "ev-task", "ev-node")
    assert (defaulted.workspacePath, defaulted.collectorId, defaulted.agentId, defaulted.userId) == ("req/ws", "req-col", "req-agent", "req-user")
    assert (defaulted.traceId, defaulted.runId, defaulted.taskId, defaulted.attributes["collectorNode"]) == ("req-trace", "req-run", "req-task", "req-node")

    (bare,) = events_of(parse_events_body(dumps({"event": {"kind": "dns", "query": "c"}})), source)
    assert (bare.workspacePath, bare.collectorId, bare.sourceId) == ("src/ws", "src-col", "src_1")


def test_garbage_explicit_identity_does_not_hide_the_request_default():
    body = {"agentId": "req-agent", "workspacePath": "req/ws", "events": [{"kind": "dns", "query": "a", "agentId": {"x": 1}, "workspacePath": ["w"]}]}
    (event,) = events_of(parse_events_body(dumps(body)))
    assert (event.agentId, event.workspacePath) == ("req-agent", "req/ws")


def test_fallbacks_without_any_identity():
    event = one_event(dumps({"kind": "tool", "command": "id", "uid": 1000}))
    assert (event.agentId, event.sessionId, event.workspacePath, event.userId) == ("api-agent", "api-agent", "agent://api-agent", "uid:1000")


@pytest.mark.parametrize(("given", "expected"), [(None, "custom"), ("webhook", "webhook"), ("OTEL", "otel"), ("bogus", "custom"), (5, "custom"), ({"a": 1}, "custom")])
def test_source_type_defaults_to_custom(given, expected):
    body = {"kind": "dns", "query": "a"}
    if given is not None:
        body["sourceType"] = given
    assert parse_events_body(dumps(body)).request["sourceType"] == expected


def test_request_fields_are_text_and_the_token_is_never_an_event_field():
    body = {"sourceId": 42, "sourceName": {"n": 1}, "token": "ansrc_secretTOKENvalue", "collectorId": True,
            "events": [{"kind": "dns", "query": "a", "token": "ansrc_eventLEVELtoken", "sourceId": "src_x"}]}
    parsed = parse_events_body(dumps(body))
    assert parsed.request == {"sourceId": "42", "token": "ansrc_secretTOKENvalue", "sourceType": "custom"}
    (item,) = parsed.items
    assert "token" not in orjson.dumps(item).decode().replace("tokenCount", "")
    (event,) = events_of(parsed)
    assert "ansrc_" not in event.to_json().decode()


# ---------------------------------------------------------------- kinds

ALIASES = {
    "ToolExec": ("tool", "exec", "command", "tool_exec", "toolexec", "Tool Exec", "tool-exec", "ToolExec"),
    "Egress": ("egress", "network", "network_egress", "networkegress", "egress_event", "http", "NetworkEgress", "network.egress"),
    "Dns": ("dns", "DNS"),
    "FileAccess": ("file", "file_access", "fileaccess", "file_read", "fileread", "read_file", "file_write", "filewrite", "write_file", "FileRead", "FileWrite"),
    "FileDelete": ("file_delete", "filedelete", "FileDelete"),
    "LlmCall": ("llm", "llm_call", "llmcall", "LLM"),
    "LlmApi": ("llm_api", "llmapi", "LlmApi"),
    "SslContent": ("ssl", "ssl_content", "sslcontent"),
    "SecurityAction": ("security", "security_action", "securityaction", "security_finding", "securityfinding", "finding", "alert", "risk", "SecurityFinding"),
    "ProcessExit": ("process", "process_exit", "processexit"),
    "RuntimeEvent": ("runtime", "runtime_event", "runtimeevent", "verifier_warning", "verifierwarning", "verifier-warning"),
}
CATEGORY = {"ToolExec": "tool", "Egress": "network", "Dns": "network", "SslContent": "network", "FileAccess": "file",
            "FileDelete": "file", "LlmCall": "llm", "LlmApi": "llm", "SecurityAction": "security",
            "ProcessExit": "process", "RuntimeEvent": "runtime"}


@pytest.mark.parametrize(("alias", "kind"), [(a, k) for k, aliases in ALIASES.items() for a in aliases])
@pytest.mark.parametrize("field", ["kind", "eventKind", "attributes.kind", "attributes.eventKind"])
def test_kind_aliases(alias, kind, field):
    event = {"attributes": {field.split(".")[1]: alias}} if "." in field else {field: alias}
    result = one_event(dumps({"event": event}))
    assert (result.eventKind, result.eventCategory) == (kind, CATEGORY[kind])


def test_event_kind_beats_kind_beats_attributes():
    assert one_event(dumps({"eventKind": "dns", "kind": "tool", "attributes": {"kind": "file"}})).eventKind == "Dns"
    assert one_event(dumps({"kind": "tool", "attributes": {"eventKind": "file"}})).eventKind == "ToolExec"
    assert one_event(dumps({"attributes": {"eventKind": "file", "kind": "dns"}})).eventKind == "FileAccess"


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"argv": ["ls"], "path": "/x", "query": "q", "endpoint": "e", "peer": "p"}, "ToolExec"),
        ({"command": "ls"}, "ToolExec"),
        ({"path": "/x", "query": "q", "endpoint": "e", "peer": "p"}, "FileAccess"),
        ({"query": "q", "endpoint": "e", "peer": "p"}, "Dns"),
        ({"endpoint": "api.example", "peer": "p"}, "LlmCall"),
        ({"sni": "api.example"}, "LlmCall"),
        ({"peer": "10.0.0.1"}, "Egress"),
        ({"subject": "something happened"}, "Event"),
    ],
)
def test_kind_inference_order(fields, kind):
    assert one_event(dumps({"event": fields})).eventKind == kind


@pytest.mark.parametrize(("raw", "kind"), [("deploy.rollout", "deploy.rollout"), ("Compaction", "Compaction"), (42, "42"), (4.0, "4"), (1.5, "1.5")])
def test_unknown_kinds_are_recorded_verbatim_with_category_unknown(raw, kind):
    event = one_event(dumps({"kind": raw, "attributes": {"stage": "canary"}}))
    assert (event.eventKind, event.eventCategory, event.source) == (kind, "unknown", "api")
    assert event.attributes["stage"] == "canary"


@pytest.mark.parametrize("garbage", [{"nested": "kind"}, ["tool"], True, False, "", "   "])
def test_non_scalar_kinds_are_ignored_and_the_kind_inferred(garbage):
    assert one_event(dumps({"kind": garbage, "command": "ls"})).eventKind == "ToolExec"
    assert one_event(dumps({"kind": garbage, "attributes": {"kind": garbage}, "subject": "s"})).eventKind == "Event"


def test_an_explicit_category_wins_and_a_bogus_one_is_ignored():
    assert one_event(dumps({"kind": "deploy", "category": "security"})).eventCategory == "security"
    assert one_event(dumps({"kind": "dns", "query": "a", "eventCategory": "bogus"})).eventCategory == "network"


def test_a_heartbeat_kind_is_not_an_api_event():
    parsed = parse_events_body(dumps({"events": [{"kind": "CollectorHeartbeat"}]}))
    assert parsed.items == [Rejection("unsupported event kind: CollectorHeartbeat", 0)]


def test_long_kinds_are_bounded():
    event = one_event(dumps({"kind": "k" * 10_000}))
    assert len(event.eventKind) <= 128 and event.eventCategory == "unknown"


# ---------------------------------------------------------------- timestamps

@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (NOW, NOW), (NOW // 1000, NOW), (str(NOW), NOW), ("2026-06-29T10:00:00Z", NOW), ("2026-06-29 10:00:00", NOW),
        ("2026-06-29T12:00:00+02:00", NOW), ("yesterday", NOW), (-5, NOW), (1e300, NOW), ("1e400", NOW),
        ({"t": 1}, NOW), (True, NOW), ("99999-01-01", NOW),
    ],
)
def test_timestamps(value, expected):
    assert one_event(dumps({"kind": "dns", "query": "a", "at": value})).at == expected


def test_timestamp_is_the_fallback_for_an_unusable_at():
    assert one_event(dumps({"kind": "dns", "query": "a", "at": "garbage", "timestamp": NOW - 5000})).at == NOW - 5000


# ---------------------------------------------------------------- previews

def test_the_default_preview_is_the_synthesised_line():
    event = one_event(dumps({"kind": "egress", "peer": "10.1.2.3", "port": 443, "agentId": "a"}))
    assert orjson.loads(event.rawPreview) == {"identity": {"agent": "a"}, "event": {"Egress": {"pid": 1, "peer": "10.1.2.3", "port": 443}}}


def test_a_producer_preview_wins_and_is_redacted():
    event = one_event(dumps({"kind": "tool", "command": "ls", "rawPreview": "exec ls --token=abcdef123456"}))
    assert event.rawPreview == "exec ls --token=[redacted]"
    event = one_event(dumps({"kind": "tool", "command": "ls", "rawPreview": {"argv": ["ls"], "password": "hunter2"}}))
    assert orjson.loads(event.rawPreview) == {"argv": ["ls"], "password": "[redacted]"}


# ---------------------------------------------------------------- bad input: BodyError

@pytest.mark.parametrize(
    "body",
    [
        b'{"events":[{"kind":"tool","command":"ls"',
        b'{"kind": }',
        b"[1, 2",
        b"{'kind': 'tool'}",
        b'{"kind":"tool",}',
        b"NaN",
        b"[1e400]",
        b"{" * 1500 + b"}" * 1500,
        b"[" * 2000 + b"]" * 2000,
        b'{"kind":"tool"} {"kind":"dns"}',
        b'{"kind":"tool"}\n{"kind":"dns"}',
        "{\"kind\": \"tool\", \"command\": \"\\ud800\"}",
    ],
    ids=["truncated", "missing-value", "unclosed-array", "single-quotes", "trailing-comma", "nan", "overflow",
         "deep-objects", "deep-arrays", "two-documents", "ndjson", "lone-surrogate-escape"],
)
def test_malformed_json_raises_body_error(body):
    with pytest.raises(BodyError) as info:
        parse_events_body(body)
    assert str(info.value).startswith("malformed JSON: ")
    assert len(str(info.value)) < 240
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "body",
    [b'{"kind":"tool","command":"\xff"}', '{"kind":"tool","command":"é"}'.encode("latin-1"), "{\"a\":\"\ud800\"}".encode("utf-8", "surrogatepass"),
     "{\"a\":\"\ud800\"}", "é".encode("utf-16")],
)
def test_non_utf8_raises_body_error(body):
    with pytest.raises(BodyError, match="not valid UTF-8"):
        parse_events_body(body)


@pytest.mark.parametrize("body", [b"42", b'"event"', b"true", b"-1.5", 42, "  7  ", True])
def test_scalar_bodies_raise_body_error(body):
    with pytest.raises(BodyError, match="must be an object or an array"):
        parse_events_body(body)


@pytest.mark.parametrize("body", [{"kind": {1, 2}}, {"kind": object()}, [b"x", {1: frozenset()}]])
def test_unjsonable_parsed_bodies_raise_body_error(body):
    with pytest.raises(BodyError, match="not JSON data"):
        parse_events_body(body)


def test_parsed_bodies_from_other_json_readers_are_accepted():
    body = {"kind": "tool", "command": "ls", "pid": 2**80, "latencyMs": float("nan"), "agentId": "a\ud800b", 7: "seven"}
    event = one_event(body)
    assert event.attributes["pid"] == 1 and event.latencyMs == 0.0
    assert event.agentId == "a\ufffdb"


# ---------------------------------------------------------------- bad input: rejected items

@pytest.mark.parametrize("events", ["x", 5, True, {"kind": "tool"}])
def test_events_not_a_list_is_one_rejected_item(events):
    assert parse_events_body(dumps({"events": events})).items == [Rejection(generic.EVENTS_NOT_LIST, 0)]


@pytest.mark.parametrize("event", [5, "tool", ["tool"], True])
def test_event_not_an_object_is_rejected(event):
    assert parse_events_body(dumps({"event": event})).items == [Rejection("invalid batch item", 0)]


def test_garbage_batch_elements_are_rejected_in_place():
    parsed = parse_events_body(dumps({"events": [1, "x", None, [], True, {"kind": "dns", "query": "q"}, 2.5]}))
    reasons = [i.reason if isinstance(i, Rejection) else "ok" for i in parsed.items]
    assert reasons == ["invalid batch item"] * 5 + ["ok", "invalid batch item"]
    assert [i.index for i in parsed.items if isinstance(i, Rejection)] == [0, 1, 2, 3, 4, 6]


GARBAGE = [
    {"deep": [[[[{"x": [1, {"y": "z"}]}]]]]}, ["a", 1, None], True, False, 0, -1, 1e300, -1e300, 2**63, "", " ",
    "²", "nan", "inf", "1e400", "9" * 5000, "\x00\x01", "x" * 20_000, [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]],
    "[" * 300 + "]" * 300,
]
FIELDS = [
    "id", "sourceEventId", "at", "timestamp", "kind", "eventKind", "category", "eventCategory", "workspacePath", "agentId",
    "sessionId", "userId", "traceId", "spanId", "parentSpanId", "runId", "taskId", "collectorId", "nodeName", "pid", "uid",
    "cwd", "argv", "command", "peer", "port", "query", "path", "sni", "endpoint", "content", "data", "promptTokens",
    "completionTokens", "status", "runtimeKind", "subject", "rawPreview", "tokenCount", "latencyMs", "attributes", "source",
    "process", "attribution", "exitCode", "detail", "write", "isRead", "argvTruncated",
]
KINDS = ["tool", "egress", "dns", "file", "file_delete", "llm", "llm_api", "ssl", "security", "process", "runtime", "deploy", None]


@pytest.mark.parametrize("field", FIELDS)
def test_wrong_types_in_any_field_never_raise(field):
    for kind in KINDS:
        events = []
        for value in GARBAGE:
            event = {field: value}
            if kind and field not in ("kind", "eventKind"):
                event["kind"] = kind
            events.append(event)
        parsed = parse_events_body(dumps({"agentId": "fallback-agent", "events": events}))
        results = events_of(parsed)
        assert len(results) == len(GARBAGE)
        for result in results:
            if isinstance(result, Rejection):
                assert result.reason != generic.INVALID_EVENT  # the last-resort guard never fires
                continue
            assert len(result.to_json()) < 64_000
            assert len(result.rawPreview) <= 1800


def test_numbers_no_store_can_hold_are_dropped_not_crashing():
    event = one_event(dumps({"kind": "llm_api", "pid": 1e300, "uid": "²", "promptTokens": 1e300, "completionTokens": "9" * 30,
                             "tokenCount": "nan", "latencyMs": "1e400", "at": 1e300}))
    assert event.attributes["pid"] == 1 and "uid" not in event.attributes
    assert event.tokenCount == 0 and event.latencyMs == 0.0 and event.at == NOW
    event = one_event(dumps({"kind": "tool", "command": "ls", "tokenCount": 1e300, "port": 2**63}))
    assert event.tokenCount == 0


def test_deeply_nested_ssl_content_is_json_text():
    nested = "[" * 600 + '"password=hunter2"' + "]" * 600
    event = one_event(('{"kind": "ssl", "content": ' + nested + "}").encode())
    assert event.eventKind == "SslContent" and "hunter2" not in event.to_json().decode()


# ---------------------------------------------------------------- huge fields

def test_a_one_megabyte_command_is_cut_and_flagged():
    parsed = parse_events_body(dumps({"kind": "tool", "command": "echo " + "A" * 1_000_000}))
    (item,) = parsed.items
    result = normalize(item, default_source="api", now=NOW)
    assert result.evidence_incomplete
    event = result.event
    assert event.attributes["argv_truncated"] is True
    assert len(event.subject) <= 80 and len(event.attributes["argv"]) <= 300
    assert len(event.to_json()) < 8_000


def test_a_one_megabyte_argv_item_is_cut():
    event = one_event(dumps({"kind": "tool", "argv": ["python", "-c", "B" * 1_000_000]}))
    assert event.attributes["argv_truncated"] is True
    assert len(event.to_json()) < 8_000


def test_ten_thousand_attributes_are_bounded():
    event = one_event(dumps({"kind": "dns", "query": "a", "attributes": {f"k{i}": "v" * 300 for i in range(10_000)}}))
    assert len(event.attributes) <= 120
    assert all(len(k) <= 80 and (not isinstance(v, str) or len(v) <= 240) for k, v in event.attributes.items())


def test_huge_identity_and_subject_fields_are_bounded():
    big = "z" * 1_000_000
    event = one_event(dumps({"kind": "file", "path": big, "subject": big, "agentId": big, "workspacePath": big,
                             "sessionId": big, "id": big, "traceId": big, "userId": big}))
    assert len(event.subject) <= 240 and len(event.agentId) <= 512 and len(event.workspacePath) <= 1024
    assert len(event.to_json()) < 16_000


def test_huge_peer_query_subjects_are_bounded():
    for event in (one_event(dumps({"kind": "egress", "peer": "p" * 100_000})), one_event(dumps({"kind": "dns", "query": "q" * 100_000}))):
        assert len(event.subject) <= 240
