"""Property: whatever a producer posts to /ingest/events, `parse_events_body` raises nothing but
`BodyError`, and every item it returns normalises (observer.normalize) without raising to an event
that serialises — or is a rejection with a reason."""

from __future__ import annotations

import base64
import json

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anysentry.events import generic
from anysentry.events.errors import BodyError
from anysentry.events.generic import parse_events_body
from anysentry.events.model import Heartbeat, Observation, Rejection
from anysentry.events.observer import normalize

SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FIELD_NAMES = [
    "events", "event", "kind", "eventKind", "category", "eventCategory", "subject", "attributes", "argv", "command", "peer",
    "endpoint", "query", "path", "sni", "port", "pid", "uid", "cwd", "content", "data", "status", "runtimeKind", "at",
    "timestamp", "id", "sourceEventId", "agentId", "workspacePath", "sessionId", "userId", "traceId", "spanId", "runId",
    "taskId", "collectorId", "nodeName", "sourceId", "sourceName", "sourceType", "token", "promptTokens", "completionTokens",
    "tokenCount", "latencyMs", "rawPreview", "process", "attribution", "source", "exitCode", "detail",
    "specversion", "specVersion", "type", "source", "time", "datacontenttype", "dataschema", "data_base64", "traceparent",
    "anysentry.event.kind", "agent", "workspace", "session", "progressive.warning",
]
KIND_WORDS = ["tool", "exec", "egress", "dns", "file_read", "FileDelete", "llm", "llm_api", "ssl", "security", "finding",
              "process", "runtime", "CollectorHeartbeat", "Event", "deploy", "com.acme.tool.ran", "1.0", ""]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(KIND_WORDS), st.sampled_from(["²", "nan", "1e400", "9" * 40, "2026-06-29T10:00:00Z", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=12))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=6) | st.dictionaries(keys, children, max_size=8),
    max_leaves=40,
)
objects = st.dictionaries(keys, json_values, max_size=10)


def base64_of(value: object) -> st.SearchStrategy[str]:
    return st.sampled_from([base64.b64encode, base64.urlsafe_b64encode]).map(lambda enc: enc(value).decode())


b64_values = st.one_of(
    st.binary(max_size=64).flatmap(base64_of),
    objects.map(lambda o: json.dumps(o, default=str).encode()).flatmap(base64_of),
    st.text(max_size=40),
    json_values,
)
envelopes = st.fixed_dictionaries(
    {"specversion": st.one_of(st.just("1.0"), json_values), "type": st.one_of(st.sampled_from(KIND_WORDS), st.text(max_size=30), json_values)},
    optional={"id": json_values, "source": json_values, "subject": json_values, "time": json_values, "data": st.one_of(objects, json_values, objects.map(lambda o: json.dumps(o, default=str))),
              "data_base64": b64_values, "datacontenttype": st.sampled_from(["application/json", "text/plain", "x"]), "token": json_values,
              "partitionkey": json_values, "secret": json_values, "traceparent": json_values},
)
requests = st.one_of(
    objects,
    envelopes,
    st.builds(lambda req, evs: {**req, "events": evs}, objects, st.lists(st.one_of(objects, envelopes, json_values), max_size=6)),
    st.builds(lambda req, ev: {**req, "event": ev}, objects, st.one_of(objects, json_values)),
)
bodies = st.one_of(requests, st.lists(st.one_of(requests, json_values), max_size=5), json_values)
headers = st.one_of(
    st.just({}),
    st.dictionaries(
        st.sampled_from(["ce-specversion", "ce-type", "ce-id", "ce-source", "ce-subject", "ce-time", "ce-token", "ce-apikey",
                         "ce-traceparent", "ce-sourcename", "CE-Type", "content-type"]),
        st.one_of(st.text(max_size=20), st.sampled_from(["1.0", "com.acme.dns.lookup", "%41%zz"])),
        max_size=8,
    ),
)
content_types = st.sampled_from(["application/json", "application/cloudevents+json", "application/cloudevents-batch+json", "text/plain", "", "garbage; x=1"])


def check(body: object, content_type: str, header_map: dict) -> None:
    try:
        parsed = parse_events_body(body, content_type=content_type, headers=header_map)
    except BodyError as exc:
        assert str(exc)
        return
    assert isinstance(parsed.request, dict) and isinstance(parsed.items, list)
    for position, item in enumerate(parsed.items):
        if isinstance(item, Rejection):
            assert item.index == position and item.reason and item.reason != generic.INVALID_EVENT
            continue
        assert isinstance(item, dict)
        result = normalize(item, default_source="api")
        assert isinstance(result, (Observation, Rejection, Heartbeat))
        if isinstance(result, Observation):
            orjson.dumps(result.event)  # every event serialises
            assert len(result.event.rawPreview) <= 1800


@SETTINGS
@given(body=bodies, content_type=content_types, header_map=headers)
def test_parsed_objects_never_raise(body, content_type, header_map):
    check(body, content_type, header_map)


@SETTINGS
@given(body=bodies, content_type=content_types, header_map=headers)
def test_json_text_never_raises(body, content_type, header_map):
    try:
        text = json.dumps(body, default=str)  # big integers, NaN and Infinity included, as other encoders write them
    except (ValueError, RecursionError):
        return
    check(text.encode("utf-8", "surrogatepass"), content_type, header_map)


@SETTINGS
@given(body=st.one_of(st.binary(max_size=300), st.text(max_size=200)), content_type=content_types, header_map=headers)
def test_arbitrary_bytes_and_text_never_raise(body, content_type, header_map):
    check(body, content_type, header_map)
