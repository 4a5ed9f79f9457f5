"""SPEC §5 guarantee for /ingest/events: a secret sent in any field of any body form (generic JSON,
structured / batch / binary CloudEvents, data, data_base64, extensions, headers) never appears in
the JSON serialisation of the normalised `AgentEvent`.

Every canary contains `CANARY`; a secret is always placed the way §5 can recognise it (an `sk-`
key, an `authorization` header text, a `password=` assignment, a sensitive attribute or extension
key, the request `token` field), in every field, for every kind."""

from __future__ import annotations

import base64

import orjson
import pytest

from anysentry.events.generic import parse_events_body
from anysentry.events.model import Observation, Rejection, SourceContext
from anysentry.events.observer import normalize

SK = "sk-CANARYskKEYabcdefghijklmnop"
BEARER = "CANARYBEARERtoken0123456789"
PW = "CANARYPWhunter2hunter2"
BODY_TOKEN = "ansrc_CANARYBODYTOKENxxxxxxxxxxxxxxxxxx"
EXT_SECRET = "CANARYEXTSECRETvalue"
HDR_APIKEY = "CANARYHDRAPIKEYvalue"
ATTR_APIKEY = "CANARYATTRAPIKEYvalue"
URL_TOKEN = "CANARYURLTOKENvalue"

SECRET_TEXTS = [
    f"deploy --key {SK} now",
    f"curl -H 'Authorization: Bearer {BEARER}' https://api.internal/v1",
    f'{{"headers": {{"authorization": "Bearer {BEARER}"}}}}',
    f"mysql --password={PW} -h db.internal",
    f'{{"api_key": "{ATTR_APIKEY}", "ok": 1}}',
    f"https://hooks.internal/x?token={URL_TOKEN}&a=1",
    f"export GITHUB_TOKEN={URL_TOKEN}; authorization={PW}",
]
SECRET_ATTRIBUTES = {
    "api_key": ATTR_APIKEY,
    "Authorization": f"Bearer {BEARER}",
    "db.password": PW,
    "note": f"called with {SK}",
    "nested": {"password": PW, "list": [f"token={URL_TOKEN}"]},
    "llm.usage.total_tokens": 12,
}
STRING_FIELDS = [
    "id", "sourceEventId", "at", "timestamp", "kind", "eventKind", "category", "workspacePath", "agentId", "sessionId",
    "userId", "traceId", "spanId", "parentSpanId", "runId", "taskId", "collectorId", "nodeName", "pid", "uid", "cwd",
    "command", "peer", "port", "query", "path", "sni", "endpoint", "content", "data", "status", "runtimeKind", "subject",
    "rawPreview", "detail", "source", "exitCode",
]
KINDS = ["tool", "egress", "dns", "file", "file_delete", "llm", "llm_api", "ssl", "security", "process", "runtime", "deploy", None]


def assert_clean(parsed, source: SourceContext | None = None, expect_events: bool = True) -> int:
    for key, value in parsed.request.items():
        if key != "token":
            assert "CANARY" not in str(value), (key, value)
    count = 0
    for item in parsed.items:
        if isinstance(item, Rejection):
            assert "CANARY" not in item.reason
            continue
        result = normalize(item, source=source, default_source="api")
        if isinstance(result, Rejection):
            continue
        assert isinstance(result, Observation)
        text = orjson.dumps(result.event).decode()
        assert "CANARY" not in text, text
        count += 1
    if expect_events:
        assert count, parsed.items
    return count


def body(value: object) -> bytes:
    return orjson.dumps(value)


# ---------------------------------------------------------------- generic JSON

@pytest.mark.parametrize("field", STRING_FIELDS)
def test_secret_texts_in_every_event_field(field):
    events = []
    for kind in KINDS:
        for text in SECRET_TEXTS:
            event = {field: text}
            if kind and field not in ("kind", "eventKind"):
                event["kind"] = kind
            events.append(event)
    parsed = parse_events_body(body({"token": BODY_TOKEN, "events": events}))
    assert_clean(parsed)


@pytest.mark.parametrize("kind", KINDS)
def test_secrets_in_argv_lists_attributes_process_and_attribution(kind):
    event = {
        "kind": kind,
        "argv": ["sh", "-c", SECRET_TEXTS[1], f"--password={PW}", SK, "echo", '{"api_key":', f'"{ATTR_APIKEY}"}}'],
        "attributes": {**SECRET_ATTRIBUTES, "argv": [f"--token={URL_TOKEN}"], "progressive.warning": f"key {SK}"},
        "process": {"exe": f"/bin/run --password={PW}", "cwd": f"/tmp/{SK}", "comm": "run", "pid": 3},
        "attribution": {"reason": SECRET_TEXTS[1], "workloadRef": {"token": BODY_TOKEN, "name": f"api_key={ATTR_APIKEY}"}},
        "rawPreview": {"line": SECRET_TEXTS[3], "secret": EXT_SECRET},
        "content": {"messages": [{"role": "user", "content": SECRET_TEXTS[2]}], "api_key": ATTR_APIKEY},
        "data": {"authorization": f"Bearer {BEARER}"},
    }
    parsed = parse_events_body(body({"token": BODY_TOKEN, "sourceName": f"hook?token={URL_TOKEN}", "event": event}))
    assert_clean(parsed)


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_secret_texts_in_request_defaults(text):
    defaults = {k: text for k in ("workspacePath", "agentId", "sessionId", "userId", "traceId", "runId", "taskId", "collectorId", "nodeName", "sourceName", "sourceId")}
    parsed = parse_events_body(body({**defaults, "token": BODY_TOKEN, "events": [{"kind": "dns", "query": "q"}, {"kind": "tool", "command": "ls"}]}))
    assert parsed.request["token"] == BODY_TOKEN
    assert_clean(parsed, SourceContext(sourceId="src_1", workspacePath="ws"))


def test_the_body_token_appears_nowhere_in_any_form():
    forms = [
        {"token": BODY_TOKEN, "kind": "tool", "command": "ls"},
        {"token": BODY_TOKEN, "event": {"kind": "tool", "command": "ls", "token": BODY_TOKEN}},
        [{"token": BODY_TOKEN, "events": [{"kind": "dns", "query": "q", "token": BODY_TOKEN}]}],
        {"token": BODY_TOKEN, "events": [{"kind": "deploy", "attributes": {"token": BODY_TOKEN}}]},
    ]
    for form in forms:
        assert_clean(parse_events_body(body(form)))


# ---------------------------------------------------------------- CloudEvents

def envelope(**fields) -> dict:
    return {"specversion": "1.0", "type": "dev.acme.agents.tool.invoked", "source": "/agents/coder", "id": "ce-1", **fields}


def data_events() -> list[dict]:
    """Data payloads carrying secrets in every field, for each kind."""
    out = []
    for kind in KINDS:
        for field in STRING_FIELDS:
            for text in SECRET_TEXTS[:5]:
                data = {field: text, "attributes": SECRET_ATTRIBUTES, "token": BODY_TOKEN}
                if kind and field not in ("kind", "eventKind"):
                    data["kind"] = kind
                out.append(data)
    return out


def test_structured_envelopes_with_secrets_everywhere():
    envelopes = [
        envelope(data=data, token=BODY_TOKEN, secret=EXT_SECRET, apikey=HDR_APIKEY, **{"x-password": PW})
        for data in data_events()
    ]
    for start in range(0, len(envelopes), 400):
        parsed = parse_events_body(body(envelopes[start:start + 400]), content_type="application/cloudevents-batch+json")
        assert parsed.request["token"] == BODY_TOKEN
        assert_clean(parsed)


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_secret_texts_in_every_envelope_attribute(text):
    for key in ("id", "source", "subject", "type", "time", "dataschema", "datacontenttype", "traceparent", "partitionkey", "specversion"):
        env = envelope(data={"kind": "dns", "query": "q"}, token=BODY_TOKEN)
        env[key] = f"com.acme.{text}" if key == "type" else text
        assert_clean(parse_events_body(body(env)))


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_secrets_in_data_as_a_json_string_and_as_data_base64(text):
    for kind in KINDS:
        payload = {"kind": kind, "command": text, "content": text, "subject": text, "agentId": text, "attributes": SECRET_ATTRIBUTES,
                   "token": BODY_TOKEN, "data": text}
        encoded = orjson.dumps(payload)
        for env in (
            envelope(data=encoded.decode(), token=BODY_TOKEN),
            envelope(data_base64=base64.b64encode(encoded).decode()),
            envelope(data_base64=base64.urlsafe_b64encode(encoded).decode().rstrip("=")),
        ):
            parsed = parse_events_body(body(env), content_type="application/cloudevents+json")
            assert parsed.request["token"] == BODY_TOKEN
            assert_clean(parsed)


def test_the_cloudevents_secret_extension_and_header_apikey_are_redacted():
    parsed = parse_events_body(body(envelope(secret=EXT_SECRET, data={"kind": "dns", "query": "q"})))
    assert_clean(parsed)
    (item,) = parsed.items
    assert normalize(item, default_source="api").event.attributes["cloudevents.secret"] == "[redacted]"


@pytest.mark.parametrize("text", SECRET_TEXTS)
def test_binary_mode_with_secrets_in_headers_and_body(text):
    headers = {
        "ce-specversion": "1.0", "ce-type": "dev.acme.agents.tool.invoked", "ce-id": text, "ce-source": text, "ce-subject": text,
        "ce-apikey": HDR_APIKEY, "ce-token": BODY_TOKEN, "ce-authorization": f"Bearer {BEARER}", "ce-x-secret-value": EXT_SECRET,
        "ce-comment": text, "ce-traceparent": text, "Authorization": f"Bearer {BEARER}", "X-AnySentry-Ingest-Token": BODY_TOKEN,
    }
    for kind in KINDS:
        data = {"kind": kind, "command": text, "path": text, "peer": text, "query": text, "content": text, "subject": text,
                "token": BODY_TOKEN, "sourceName": text, "attributes": SECRET_ATTRIBUTES}
        parsed = parse_events_body(body(data), content_type="application/json", headers=headers)
        assert parsed.request["token"] == BODY_TOKEN
        assert_clean(parsed)
    # a percent-encoded header value is decoded before it is redacted
    encoded = {**headers, "ce-comment": "password%3D" + PW}
    assert_clean(parse_events_body(b'{"kind": "dns", "query": "q"}', headers=encoded))


def test_binary_mode_text_body_with_secrets():
    headers = {"ce-specversion": "1.0", "ce-type": "com.acme.prompt.ssl", "ce-id": "t"}
    for text in SECRET_TEXTS:
        assert_clean(parse_events_body(text.encode(), content_type="text/plain", headers=headers))


# ---------------------------------------------------------------- known gaps upstream (see the report)

def test_a_secret_used_as_an_attribute_key():
    assert_clean(parse_events_body(body({"kind": "dns", "query": "q", "attributes": {SK: 1}})))


def test_escaped_quotes_in_free_text():
    assert_clean(parse_events_body(body({"kind": "dns", "query": 'q {\\"token\\":\\"' + URL_TOKEN + '\\"}'})))
