"""CloudEvents on POST /ingest/events (SPEC §8.4): structured, batch and binary mode, data and
data_base64, kind and field mapping, extensions, tokens and previews.

Items are normalised with `observer.normalize(item, default_source="api")` and the assertions are
on the canonical `AgentEvent`."""

from __future__ import annotations

import base64

import orjson
import pytest

from anysentry.events import cloudevents as ce
from anysentry.events import generic
from anysentry.events.errors import BodyError
from anysentry.events.generic import parse_events_body
from anysentry.events.ids import hash_id
from anysentry.events.model import AgentEvent, Observation, ParsedBody, Rejection, SourceContext
from anysentry.events.observer import normalize

NOW = 1_782_727_200_000  # 2026-06-29T10:00:00Z
CE_JSON = "application/cloudevents+json"
CE_BATCH = "application/cloudevents-batch+json"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
WEBHOOK_TOKEN = "ansrc_KNATIVEtriggerTOKENaaaaaaaaaaaaaaaa"

# A Knative trigger delivering an agent gateway's tool invocation (structured mode).
KNATIVE_TOOL = {
    "specversion": "1.0",
    "type": "dev.acme.agents.tool.invoked",
    "source": "/apis/v1/namespaces/agents/pods/coder-7f9c",
    "id": "b3f5c2e0-6d1a-4f7a-9c61-2f0c8c9b8a11",
    "time": "2026-06-29T10:00:00Z",
    "subject": "coder",
    "datacontenttype": "application/json",
    "dataschema": "https://schemas.acme.dev/agent-tool/v1.json",
    "knativearrivaltime": "2026-06-29T10:00:00.120Z",
    "traceparent": TRACEPARENT,
    "token": WEBHOOK_TOKEN,
    "data": {"command": ["kubectl", "delete", "namespace", "prod"], "sessionId": "run-991", "userId": "dev@acme.dev"},
}
# The same gateway reporting the model call behind it.
GATEWAY_LLM = {
    "specversion": "1.0",
    "type": "com.openai.chat.completion",
    "source": "https://gateway.acme.dev/llm",
    "id": "llm-5521",
    "time": "2026-06-29T10:00:01Z",
    "data": {"agentId": "coder", "workspace": "agents/coder", "endpoint": "api.openai.com", "model": "gpt-4.1",
             "latencyMs": 830, "attributes": {"llm.usage.total_tokens": 1200, "api_key": "sk-notARealKeyButLongEnough"}},
}
# An Argo Events sensor forwarding a failed workflow: an unknown kind, recorded as observed.
ARGO_FAILED = {
    "specversion": "1.0",
    "type": "io.argoproj.workflow.v1alpha1.Workflow.failed",
    "source": "argo-events/workflow-events",
    "id": "wf-train-llm-42-failed",
    "subject": "train-llm-42",
    "data": {"workflow": "train-llm-42", "phase": "Failed", "attributes": {"argo.phase": "Failed"}},
}
# Binary mode: the gateway posts the data as the body and the envelope in ce-* headers.
BINARY_HEADERS = {
    "Ce-Specversion": "1.0",
    "Ce-Type": "dev.acme.agents.file.read",
    "Ce-Id": "fr-0007",
    "Ce-Source": "acme-gateway",
    "Ce-Time": "2026-06-29T10:00:02Z",
    "Ce-Subject": "coder",
    "Ce-Traceparent": TRACEPARENT,
    "Ce-Partitionkey": "coder%2Frun-991",
    "Ce-Apikey": "HEADERapiKEYvalue",
    "Ce-Token": WEBHOOK_TOKEN,
    "Content-Type": "application/json",
    "User-Agent": "acme-gateway/2.3",
}
BINARY_BODY = {"path": "/workspace/.aws/credentials", "sessionId": "run-991", "sourceName": "acme-gw", "collectorId": "gw-1"}


def events_of(parsed: ParsedBody, source: SourceContext | None = None) -> list[AgentEvent | Rejection]:
    out: list[AgentEvent | Rejection] = []
    for item in parsed.items:
        if isinstance(item, Rejection):
            out.append(item)
            continue
        result = normalize(item, source=source, default_source="api", now=NOW)
        assert isinstance(result, (Observation, Rejection)), result
        if isinstance(result, Observation):
            orjson.dumps(result.event)
            out.append(result.event)
        else:
            out.append(result)
    return out


def one(body, source: SourceContext | None = None, **kw) -> AgentEvent:
    if isinstance(body, dict):
        body = orjson.dumps(body)
    kw.setdefault("content_type", CE_JSON)
    (event,) = events_of(parse_events_body(body, **kw), source)
    assert isinstance(event, AgentEvent), event
    return event


def envelope(type_: str = "com.example.thing.happened", **fields) -> dict:
    return {"specversion": "1.0", "type": type_, "source": "urn:example", "id": "ce-1", **fields}


def b64(value: object, urlsafe: bool = False, pad: bool = True) -> str:
    raw = value if isinstance(value, bytes) else orjson.dumps(value)
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if pad else text.rstrip("=")


# ---------------------------------------------------------------- structured mode

def test_knative_tool_invocation():
    source = SourceContext(sourceId="src_knative")
    parsed = parse_events_body(orjson.dumps(KNATIVE_TOOL), content_type=CE_JSON)
    assert parsed.request == {"sourceName": "/apis/v1/namespaces/agents/pods/coder-7f9c", "token": WEBHOOK_TOKEN, "sourceType": "webhook"}
    (event,) = events_of(parsed, source)
    assert (event.eventKind, event.eventCategory, event.source) == ("ToolExec", "tool", "api")
    assert event.subject == "kubectl delete namespace prod"
    assert event.agentId == "coder"  # ce subject
    assert event.workspacePath == "/apis/v1/namespaces/agents/pods/coder-7f9c"  # ce source
    assert event.sessionId == "run-991"  # data
    assert event.runId == KNATIVE_TOOL["id"]  # ce id
    assert event.userId == "dev@acme.dev"
    assert event.traceId == "4bf92f3577b34da6a3ce929d0e0e4736" and event.parentSpanId == "00f067aa0ba902b7"
    assert event.at == NOW
    assert event.sourceEventId == KNATIVE_TOOL["id"]
    assert event.eventId == hash_id("evt", ["src_knative", KNATIVE_TOOL["id"]])
    attrs = event.attributes
    assert attrs["cloudEventId"] == KNATIVE_TOOL["id"]
    assert attrs["cloudEventType"] == "dev.acme.agents.tool.invoked"
    assert attrs["cloudEventSource"] == KNATIVE_TOOL["source"]
    assert attrs["cloudEventSpecVersion"] == "1.0"
    assert attrs["cloudEventDataSchema"] == KNATIVE_TOOL["dataschema"]
    assert attrs["cloudEventContentType"] == "application/json"
    assert "cloudEventDataBase64" not in attrs
    assert attrs["cloudevents.knativearrivaltime"] == "2026-06-29T10:00:00.120Z"
    assert attrs["cloudevents.traceparent"] == TRACEPARENT
    assert not any(k.startswith("cloudevents.") and k[12:] in ce.RESERVED for k in attrs)
    text = event.to_json().decode()
    assert WEBHOOK_TOKEN not in text
    preview = orjson.loads(event.rawPreview)
    assert "token" not in preview and preview["type"] == KNATIVE_TOOL["type"]
    assert preview["data"]["command"] == ["kubectl", "delete", "namespace", "prod"]


def test_same_cloud_event_id_twice_is_the_same_event():
    source = SourceContext(sourceId="src_knative")
    first = one(KNATIVE_TOOL, source)
    redelivered = one({**KNATIVE_TOOL, "knativearrivaltime": "2026-06-29T10:05:00Z"}, source)
    assert first.eventId == redelivered.eventId
    other = one({**KNATIVE_TOOL, "id": "another-id"}, source)
    assert other.eventId != first.eventId


def test_llm_call_through_an_openai_typed_event():
    event = one(GATEWAY_LLM)
    assert (event.eventKind, event.eventCategory) == ("LlmCall", "llm")
    assert (event.agentId, event.workspacePath) == ("coder", "agents/coder")
    assert event.latencyMs == 830
    assert event.attributes["llm.usage.total_tokens"] == 1200
    assert event.attributes["api_key"] == "[redacted]"
    assert event.at == NOW + 1000


def test_argo_failed_workflow_is_recorded_with_an_unknown_kind():
    event = one(ARGO_FAILED)
    assert (event.eventKind, event.eventCategory, event.source) == ("failed", "unknown", "api")
    assert event.agentId == "train-llm-42" and event.attributes["argo.phase"] == "Failed"


def test_batch_mode_maps_each_envelope_and_takes_the_source_from_the_first():
    parsed = parse_events_body(orjson.dumps([KNATIVE_TOOL, GATEWAY_LLM, ARGO_FAILED, 7]), content_type=CE_BATCH)
    assert parsed.request["token"] == WEBHOOK_TOKEN and parsed.request["sourceType"] == "webhook"
    events = events_of(parsed)
    assert [e.eventKind if isinstance(e, AgentEvent) else e.reason for e in events] == ["ToolExec", "LlmCall", "failed", "invalid batch item"]


def test_envelopes_mixed_with_generic_requests_in_one_array():
    body = [{"sourceName": "mixed", "event": {"kind": "dns", "query": "a"}}, GATEWAY_LLM]
    parsed = parse_events_body(orjson.dumps(body))
    assert parsed.request["sourceName"] == "mixed" and parsed.request["sourceType"] == "custom"
    assert [e.eventKind for e in events_of(parsed)] == ["Dns", "LlmCall"]


def test_an_envelope_inside_events_gets_the_outer_defaults_below_its_own():
    body = {"userId": "outer-user", "agentId": "outer-agent", "events": [envelope(data={"query": "x"}), envelope(agentId="own-agent")]}
    first, second = events_of(parse_events_body(orjson.dumps(body)))
    assert (first.userId, first.agentId) == ("outer-user", "outer-agent")
    assert second.agentId == "own-agent"


def test_camel_case_spec_version_and_upper_case_keys_are_accepted():
    event = one({"specVersion": "1.0", "Type": "com.example.dns.lookup", "ID": "x1", "data": {"query": "a.example"}})
    assert event.eventKind == "Dns" and event.sourceEventId == "x1"


# ---------------------------------------------------------------- kinds

@pytest.mark.parametrize(
    ("data", "kind"),
    [
        ({"eventKind": "dns", "kind": "tool", "anysentry.event.kind": "file", "query": "q"}, "Dns"),
        ({"kind": "tool", "anysentry.event.kind": "file"}, "ToolExec"),
        ({"anysentry.event.kind": "file_delete", "path": "/x"}, "FileDelete"),
        ({"eventKind": {"bad": 1}, "kind": "ssl"}, "SslContent"),
        ({"kind": 7}, "7"),
    ],
)
def test_kind_from_data(data, kind):
    assert one(envelope("com.example.tool.ran", data=data)).eventKind == kind


@pytest.mark.parametrize(
    ("type_", "kind"),
    [
        ("dev.acme.agent.tool.invoked", "ToolExec"), ("com.acme.exec.started", "ToolExec"), ("x.command.run", "ToolExec"),
        ("net.acme.egress.opened", "Egress"), ("com.acme.network.flow", "Egress"), ("com.acme.http.request", "Egress"),
        ("com.acme.dns.query", "Dns"),
        ("com.acme.file.opened", "FileAccess"), ("dev.ci.artifact.uploaded", "FileAccess"),
        ("com.acme.llm.completion", "LlmCall"), ("com.acme.ai.inference", "LlmCall"), ("com.openai.chat", "LlmCall"),
        ("com.acme.OpenAI.Chat", "LlmCall"), ("com.acme.model.invoked", "LlmCall"), ("com.acme.genai.span", "LlmCall"),
        ("com.acme.security.alert", "SecurityAction"), ("io.kyverno.policy.violation", "SecurityAction"),
        ("com.acme.process.started", "ProcessExit"),
        ("com.acme.agent.FileDelete", "FileDelete"), ("com.acme.agent.llm_api", "LlmApi"), ("com.acme.SslContent", "SslContent"),
        ("com.acme.agent.finding", "SecurityAction"),
        ("dev.knative.sources.ping", "ping"), ("io.argoproj.workflow.v1alpha1.Workflow.failed", "failed"),
        ("com.acme.container.created", "created"), ("com.acme.email.sent", "sent"), ("single", "single"),
    ],
)
def test_kind_from_type(type_, kind):
    event = one(envelope(type_))
    assert event.eventKind == kind
    assert event.eventCategory == ({"ToolExec": "tool", "Egress": "network", "Dns": "network", "FileAccess": "file", "FileDelete": "file",
                                    "LlmCall": "llm", "LlmApi": "llm", "SslContent": "network", "SecurityAction": "security",
                                    "ProcessExit": "process"}.get(kind, "unknown"))


# ---------------------------------------------------------------- field source order (§8.4 table)

@pytest.mark.parametrize(
    ("fields", "data", "expected"),
    [
        ({"subject": "subj", "agentId": "body"}, {"agentId": "d1", "agent": "d2"}, "d1"),
        ({"subject": "subj", "agentId": "body"}, {"agent": "d2"}, "d2"),
        ({"subject": "subj", "agentId": "body"}, {}, "body"),
        ({"subject": "subj"}, {"agentId": {"bad": 1}}, "subj"),
        ({}, {}, "api-agent"),
    ],
)
def test_agent_id_order(fields, data, expected):
    assert one(envelope(data=data, **fields)).agentId == expected


@pytest.mark.parametrize(
    ("fields", "data", "expected"),
    [
        ({"workspacePath": "body/ws"}, {"workspacePath": "d/ws", "workspace": "d/w2"}, "d/ws"),
        ({"workspacePath": "body/ws"}, {"workspace": "d/w2"}, "d/w2"),
        ({"workspacePath": "body/ws"}, {}, "body/ws"),
        ({}, {}, "urn:example"),
    ],
)
def test_workspace_order(fields, data, expected):
    assert one(envelope(data=data, **fields)).workspacePath == expected


@pytest.mark.parametrize(
    ("fields", "data", "session", "run"),
    [
        ({"sessionId": "body-s", "runId": "body-r"}, {"sessionId": "d-s", "session": "d-s2", "runId": "d-r"}, "d-s", "d-r"),
        ({"sessionId": "body-s", "runId": "body-r"}, {"session": "d-s2"}, "d-s2", "body-r"),
        ({"sessionId": "body-s"}, {}, "body-s", "ce-1"),
        ({}, {}, "ce-1", "ce-1"),
    ],
)
def test_session_and_run_order(fields, data, session, run):
    event = one(envelope(data=data, **fields))
    assert (event.sessionId, event.runId) == (session, run)


@pytest.mark.parametrize(
    ("fields", "data", "trace", "parent"),
    [
        ({"traceparent": TRACEPARENT}, {"traceId": "given-trace"}, "given-trace", ""),
        ({}, {"traceparent": TRACEPARENT}, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
        ({}, {"traceparent": TRACEPARENT, "parentSpanId": "own-parent"}, "4bf92f3577b34da6a3ce929d0e0e4736", "own-parent"),
        ({"traceId": "body-trace", "traceparent": TRACEPARENT}, {}, "body-trace", ""),
        ({"traceparent": TRACEPARENT.upper()}, {}, "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"),
    ],
)
def test_trace_order(fields, data, trace, parent):
    event = one(envelope(data=data, **fields))
    assert (event.traceId, event.parentSpanId) == (trace, parent)


@pytest.mark.parametrize(
    "traceparent",
    ["garbage", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
     "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", 42],
)
def test_invalid_traceparent_falls_back_to_the_derived_trace(traceparent):
    event = one(envelope(traceparent=traceparent))
    assert event.traceId.startswith("tr_") and event.parentSpanId == ""


def test_future_traceparent_versions_may_carry_more_fields():
    assert ce.parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more") == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


@pytest.mark.parametrize(
    ("fields", "data", "expected"),
    [
        ({"time": "2026-06-29T10:00:09Z"}, {"at": NOW + 1000, "timestamp": NOW + 2000}, NOW + 1000),
        ({"time": "2026-06-29T10:00:09Z"}, {"timestamp": (NOW + 2000) // 1000}, NOW + 2000),
        ({"time": "2026-06-29T10:00:09Z"}, {"at": "not a time", "timestamp": 1e300}, NOW + 9000),
        ({"time": "garbage"}, {}, NOW),
        ({}, {}, NOW),
    ],
)
def test_time_order(fields, data, expected):
    assert one(envelope(data=data, **fields)).at == expected


@pytest.mark.parametrize(
    ("fields", "data", "name", "type_"),
    [
        ({"sourceName": "body-name", "sourceType": "otel"}, {"sourceName": "data-name", "sourceType": "custom"}, "body-name", "otel"),
        ({}, {"sourceName": "data-name", "sourceType": "custom"}, "data-name", "custom"),
        ({}, {}, "urn:example", "webhook"),
        ({"sourceType": "bogus"}, {}, "urn:example", "webhook"),
    ],
)
def test_source_name_and_type_order(fields, data, name, type_):
    parsed = parse_events_body(orjson.dumps(envelope(data=data, **fields)))
    assert (parsed.request["sourceName"], parsed.request["sourceType"]) == (name, type_)
    (event,) = events_of(parsed)
    assert "data-name" not in event.to_json().decode()  # source keys leave the data


def test_source_event_id_falls_back_to_data_ids_when_the_envelope_has_none():
    body = {"specversion": "1.0", "type": "com.example.dns", "data": {"id": "data-id", "query": "q"}}
    assert one(body).sourceEventId == "data-id"


# ---------------------------------------------------------------- data forms

def test_data_as_a_string_holding_json():
    event = one(envelope("com.example.x", data=orjson.dumps({"eventKind": "dns", "query": "evil.example", "agentId": "a"}).decode()))
    assert (event.eventKind, event.agentId, event.subject) == ("Dns", "a", "dns evil.example")


def test_text_data_is_kept_as_ssl_content_when_the_kind_asks_for_it():
    event = one(envelope("com.example.prompt.ssl", datacontenttype="text/plain", data='{"prompt": "not parsed as json"}'))
    assert event.eventKind == "SslContent"
    event = one(envelope("com.example.tool", datacontenttype="text/plain", data="free text"))
    assert event.eventKind == "ToolExec" and event.subject == "unknown"


@pytest.mark.parametrize("data", [None, [1, 2, 3], 42, "not json {", "", True, {"nested": {"deep": [1, {"x": None}]}}])
def test_odd_data_values_still_give_one_event(data):
    event = one(envelope("com.example.thing", data=data))
    assert event.attributes["cloudEventId"] == "ce-1"


def test_data_base64_standard_urlsafe_and_unpadded():
    payload = {"eventKind": "file", "path": "/srv/ü/ok?", "agentId": "b64-agent", "note": "~~~>>>???"}
    for encoded in (b64(payload), b64(payload, urlsafe=True), b64(payload, urlsafe=True, pad=False), b64(payload, pad=False)):
        event = one(envelope("com.example.x", data_base64=encoded))
        assert (event.eventKind, event.agentId) == ("FileAccess", "b64-agent")
        assert event.attributes["cloudEventDataBase64"] is True
        assert orjson.loads(event.rawPreview)["data"]["path"] == "/srv/ü/ok?"
        assert "data_base64" not in orjson.loads(event.rawPreview)


def test_data_base64_wins_over_data():
    event = one(envelope("com.example.x", data={"kind": "dns", "query": "plain"}, data_base64=b64({"kind": "dns", "query": "encoded"})))
    assert event.subject == "dns encoded"


GOOD = b64({"kind": "dns", "query": "q"})


@pytest.mark.parametrize(
    "value",
    [
        "", "!!!!", GOOD[:-4] + "*ab=", GOOD + " ", " " + GOOD, GOOD[:10] + "\n" + GOOD[10:],
        GOOD.rstrip("=") + "=" if GOOD.endswith("==") else GOOD + "=",  # wrong padding
        GOOD + "====", "QQ=", "Q", "QR==",  # non-round-tripping (trailing bits)
        "ab+c-d__", b64(b"\xff\xfe\xfd not utf-8"), b64(b"not json at all"), b64([1, 2, 3]), b64("a string"), b64(b"42"),
        b64(b"\xef\xbb\xbf{}"), b64(b"{" * 2000), 42, ["x"], {"a": 1}, True,
    ],
)
def test_invalid_data_base64_rejects_the_item(value):
    body = envelope("com.example.x", data_base64=value, token="ansrc_tok", sourceName="hook")
    parsed = parse_events_body(orjson.dumps(body), content_type=CE_JSON)
    assert parsed.items == [Rejection(ce.INVALID_DATA_BASE64, 0)]
    assert parsed.request["token"] == "ansrc_tok" and parsed.request["sourceName"] == "hook"


def test_null_data_base64_is_absent():
    assert one(envelope("com.example.dns", data_base64=None, data={"query": "q"})).subject == "dns q"


def test_decode_data_base64_rules():
    assert ce.decode_data_base64("e30=") == {} and ce.decode_data_base64("e30") == {}
    assert ce.decode_data_base64("e31=") is None  # trailing bits set: not canonical
    assert ce.decode_data_base64("e3-=") is None  # '-' is not in the standard alphabet, and e3- is not e30
    assert ce.decode_data_base64(b64({"a": "~>?"}, urlsafe=True)) == {"a": "~>?"}
    assert ce.decode_data_base64(b64({"a": "~>?"})) == {"a": "~>?"}


# ---------------------------------------------------------------- invalid envelopes

@pytest.mark.parametrize(
    "body",
    [{"specversion": "1.0"}, {"specversion": "1.0", "type": ""}, {"specversion": "1.0", "type": "   "},
     {"specversion": "1.0", "type": 5}, {"specversion": "1.0", "type": {"a": 1}}, {"specversion": {"v": 1}, "subject": "x"}],
)
def test_an_envelope_without_a_type_is_rejected(body):
    assert parse_events_body(orjson.dumps(body)).items == [Rejection(ce.INVALID_ENVELOPE, 0)]


def test_a_cloudevents_content_type_on_a_non_envelope_is_rejected():
    assert parse_events_body(b'{"id": "x", "source": "y"}', content_type=CE_JSON + "; charset=utf-8").items == [Rejection(ce.INVALID_ENVELOPE, 0)]
    parsed = parse_events_body(b'[{"id": "x"}, {"specversion": "1.0", "type": "com.example.dns"}]', content_type=CE_BATCH)
    assert [type(i).__name__ for i in parsed.items] == ["Rejection", "dict"]


def test_null_specversion_is_not_an_envelope():
    assert one({"specversion": None, "kind": "dns", "query": "q"}, content_type="application/json").eventKind == "Dns"


# ---------------------------------------------------------------- extensions

def test_extensions_are_prefixed_and_key_redacted():
    body = envelope(partitionkey="p-1", sequence=7, comexampleextension1="value", secret="s3cr3tVALUE", password="pw-VALUE",
                    authorization="Bearer abcdefghijklmnop", nested={"a": {"b": 1}}, sampledrate=0.5, enabled=True)
    attrs = one(body).attributes
    assert attrs["cloudevents.partitionkey"] == "p-1"
    assert attrs["cloudevents.sequence"] == 7 and attrs["cloudevents.sampledrate"] == 0.5 and attrs["cloudevents.enabled"] is True
    assert attrs["cloudevents.comexampleextension1"] == "value"
    assert attrs["cloudevents.secret"] == attrs["cloudevents.password"] == attrs["cloudevents.authorization"] == "[redacted]"
    assert orjson.loads(attrs["cloudevents.nested"]) == {"a": {"b": 1}}


def test_data_attributes_cannot_spoof_the_envelope_attributes():
    attrs = one(envelope(data={"attributes": {"cloudEventId": "spoofed", "team": "ml"}})).attributes
    assert attrs["cloudEventId"] == "ce-1" and attrs["team"] == "ml"


def test_ten_thousand_extensions_are_bounded():
    body = envelope(**{f"ext{i}": "v" for i in range(10_000)}, data={"attributes": {f"a{i}": i for i in range(10_000)}})
    event = one(body)
    assert len(event.attributes) <= 120 and event.attributes["cloudEventType"] == "com.example.thing.happened"
    assert len(event.to_json()) < 32_000


def test_source_keys_never_become_extensions():
    body = envelope(sourceid="src_x", sourcename="n", sourcetype="webhook", collectorid="c-1", nodename="node-a", token="ansrc_abc")
    parsed = parse_events_body(orjson.dumps(body))
    assert parsed.request == {"sourceId": "src_x", "sourceName": "n", "sourceType": "webhook", "token": "ansrc_abc", "collectorId": "c-1", "nodeName": "node-a"}
    (event,) = events_of(parsed)
    assert not any(k.startswith("cloudevents.") for k in event.attributes)
    assert event.collectorId == "c-1" and event.attributes["collectorNode"] == "node-a"
    assert "ansrc_abc" not in event.to_json().decode()


def test_the_token_in_the_data_goes_to_the_request_and_nowhere_else():
    body = envelope(data={"token": "ansrc_inDATA", "TOKEN": "ansrc_upper", "query": "q", "kind": "dns"})
    parsed = parse_events_body(orjson.dumps(body))
    assert parsed.request["token"] == "ansrc_inDATA"
    (event,) = events_of(parsed)
    text = event.to_json().decode()
    assert "ansrc_" not in text and "token" not in orjson.loads(event.rawPreview)["data"]


# ---------------------------------------------------------------- binary mode

def test_binary_mode_with_extension_headers():
    source = SourceContext(sourceId="src_gw")
    parsed = parse_events_body(orjson.dumps(BINARY_BODY), content_type="application/json", headers=BINARY_HEADERS)
    assert parsed.request == {"sourceName": "acme-gw", "token": WEBHOOK_TOKEN, "collectorId": "gw-1", "sourceType": "webhook"}
    (event,) = events_of(parsed, source)
    assert (event.eventKind, event.subject) == ("FileAccess", "file /workspace/.aws/credentials")
    assert (event.agentId, event.workspacePath, event.sessionId, event.runId) == ("coder", "acme-gateway", "run-991", "fr-0007")
    assert event.traceId == "4bf92f3577b34da6a3ce929d0e0e4736" and event.at == NOW + 2000
    assert event.eventId == hash_id("evt", ["src_gw", "fr-0007"]) and event.collectorId == "gw-1"
    attrs = event.attributes
    assert attrs["cloudEventContentType"] == "application/json" and attrs["cloudEventSource"] == "acme-gateway"
    assert attrs["cloudevents.partitionkey"] == "coder/run-991"  # percent-decoded
    assert attrs["cloudevents.apikey"] == "[redacted]"
    assert not any("user" in k.lower() for k in attrs)  # non ce-* headers are not extensions
    text = event.to_json().decode()
    assert WEBHOOK_TOKEN not in text and "HEADERapiKEYvalue" not in text and "acme-gw" not in text
    preview = orjson.loads(event.rawPreview)
    assert preview["type"] == "dev.acme.agents.file.read" and preview["apikey"] == "[redacted]"
    assert "token" not in preview and preview["data"] == {"path": "/workspace/.aws/credentials", "sessionId": "run-991"}


def test_binary_mode_header_forms():
    pairs = [("ce-specversion", "1.0"), ("CE-TYPE", "com.example.dns"), ("ce-id", "p1"), ("ce-id", "ignored-second")]
    event = one(b'{"query": "q"}', headers=pairs, content_type="application/json")
    assert (event.eventKind, event.sourceEventId) == ("Dns", "p1")
    event = one(b'{"query": "q"}', headers={b"ce-specversion": b"1.0", b"ce-type": b"com.example.dns"}, content_type="application/json")
    assert event.eventKind == "Dns"


def test_binary_mode_with_an_empty_body_is_an_event():
    for body in (b"", None, b"  "):
        event = one(body, headers={"ce-specversion": "1.0", "ce-type": "dev.knative.sources.ping", "ce-id": "ping-1", "ce-source": "/ping"})
        assert (event.eventKind, event.eventCategory, event.sourceEventId) == ("ping", "unknown", "ping-1")


def test_binary_mode_text_body():
    headers = {"ce-specversion": "1.0", "ce-type": "com.example.prompt.ssl", "ce-id": "t1"}
    event = one(b"plain text prompt", headers=headers, content_type="text/plain")
    assert event.eventKind == "SslContent" and event.attributes["cloudEventContentType"] == "text/plain"
    with pytest.raises(BodyError, match="malformed JSON"):
        parse_events_body(b"plain text prompt", headers=headers, content_type="application/json")
    with pytest.raises(BodyError, match="UTF-8"):
        parse_events_body(b"\xff\xfe", headers=headers, content_type="text/plain")


def test_binary_mode_json_array_body():
    event = one(b'[{"kind": "dns"}]', headers={"ce-specversion": "1.0", "ce-type": "com.example.dns", "ce-id": "a1"}, content_type="application/json")
    assert event.eventKind == "Dns" and event.sourceEventId == "a1"


@pytest.mark.parametrize("headers", [{"ce-specversion": "1.0"}, {"ce-type": "com.example.dns"}, {"ce-specversion": "1.0", "ce-type": " "}])
def test_incomplete_binary_headers_fall_back_to_the_body(headers):
    event = one(b'{"kind": "tool", "command": "ls"}', headers=headers, content_type="application/json")
    assert event.eventKind == "ToolExec" and "cloudEventId" not in event.attributes


@pytest.mark.parametrize("headers", [None, {}, [("only-one",)], 42, [(1, 2), ("ce-specversion", {"x": 1})], {"ce-specversion": True}])
def test_odd_header_objects_are_ignored(headers):
    assert one(b'{"kind": "dns", "query": "q"}', headers=headers, content_type="application/json").eventKind == "Dns"


def test_binary_source_headers_and_body_source_keys():
    headers = {"ce-specversion": "1.0", "ce-type": "com.example.dns", "ce-sourcename": "from-header", "ce-agentid": "hdr-agent"}
    parsed = parse_events_body(b'{"query": "q", "sourceName": "from-body", "sourceType": "otel"}', headers=headers)
    assert parsed.request["sourceName"] == "from-header" and parsed.request["sourceType"] == "otel"
    (event,) = events_of(parsed)
    assert event.agentId == "hdr-agent"
    assert "from-body" not in event.to_json().decode()


def test_generic_helpers_accept_cloud_event_rejections():
    assert generic.api_item(Rejection("x"), index=3) == Rejection("x", 3)
