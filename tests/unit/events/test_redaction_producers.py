"""SPEC §5 guarantee for the producer formats (OTLP, Falco, Tetragon): a secret sent in any field
never appears in the JSON serialisation of the normalised event.

Canaries take the forms §5 recognises: an `sk-` key, an `Authorization: Bearer` credential, a
`password=` assignment, and any value under a sensitive attribute key (`api_key`, `db.password`,
`http.request.header.authorization`). A bare `Bearer x` with no authorization marker is not a §5.1
pattern, so it only appears under a sensitive key."""

from __future__ import annotations

import orjson
import pytest

from anysentry.events.falco import parse_falco_body
from anysentry.events.model import Observation, Rejection
from anysentry.events.observer import normalize
from anysentry.events.otlp import parse_otlp_body
from anysentry.events.tetragon import parse_tetragon_body

SK = "sk-CANARYsk0123456789abcdef"
AUTH = "Authorization: Bearer CANARYbearer0123456789"
BEARER = "Bearer CANARYrawbearer0123456789"
PW = "password=CANARYpw0123456789"
SECRET_KEYS = {"api_key": "CANARYapikey0123", "db.password": "CANARYdbpw0123",
               "http.request.header.authorization": BEARER, "x-api-key": "CANARYxapikey0123"}
TOKEN = "ansrc_TOKENCANARY0123456789"
ALL = f"{SK} {AUTH} {PW}"


def everything(prefix=""):
    """A free-text value carrying every value canary."""
    return f"{prefix}{ALL}"


def assert_clean(parsed):
    assert parsed.items, "fixture produced no items"
    seen = 0
    for item in parsed.items:
        if isinstance(item, Rejection):
            assert "CANARY" not in item.reason
            continue
        obs = normalize(item, default_source="api")
        assert isinstance(obs, Observation), obs
        blob = orjson.dumps(obs.event).decode()
        assert "CANARY" not in blob, blob
        seen += 1
    assert seen
    request = dict(parsed.request)
    assert request.pop("token", TOKEN) == TOKEN
    assert "CANARY" not in orjson.dumps(request).decode()


# --------------------------------------------------------------------------- OTLP

def kv(key, value):
    if isinstance(value, dict):
        return {"key": key, "value": value}
    return {"key": key, "value": {"stringValue": value}}


def secret_attrs():
    out = [kv(k, v) for k, v in SECRET_KEYS.items()]
    out.append({"key": "nested", "value": {"kvlistValue": {"values": [kv("password", "CANARYnestedpw0123"),
                                                                       kv("note", everything())]}}})
    out.append({"key": "list", "value": {"arrayValue": {"values": [{"stringValue": everything()}]}}})
    out.append(kv(SK, "key is a secret"))
    out.append(kv(f"note {PW}", "key with an assignment"))
    return out


def otlp_resource():
    return {"attributes": [kv("service.name", everything("svc ")), kv("service.namespace", everything("ns ")),
                           kv("service.instance.id", everything()), kv("k8s.pod.name", everything()),
                           kv("host.name", everything()), kv("k8s.node.name", everything()),
                           kv("enduser.id", everything()), *secret_attrs()]}


RECORD_VARIANTS = [
    [kv("process.command_line", f"deploy --token=CANARYtok0123456 {PW} {SK} -H '{AUTH}'")],
    [kv("process.command_args", {"arrayValue": {"values": [{"stringValue": PW}, {"stringValue": SK}]}})],
    [kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", everything("tool ")),
     kv("gen_ai.tool.call.arguments", '{"api_key": "CANARYargs0123", "cmd": "' + PW + '", "k": "' + SK + '"}')],
    [kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "t"),
     kv("gen_ai.tool.call.arguments", {"kvlistValue": {"values": [kv("secret", "CANARYkvargs0123"), kv("x", SK)]}})],
    [kv("mcp.method.name", "tools/call"), kv("mcp.tool.name", everything()), kv("mcp.session.id", everything())],
    [kv("gen_ai.operation.name", "chat"), kv("gen_ai.provider.name", everything()), kv("gen_ai.request.model", everything()),
     kv("server.address", everything()), kv("gen_ai.conversation.id", everything()), kv("gen_ai.agent.id", everything()),
     kv("gen_ai.input.messages", '[{"role": "user", "parts": [{"content": "' + SK + ' ' + PW + '"}]}]')],
    [kv("gen_ai.operation.name", everything("op "))],
    [kv("url.full", f"https://example.test/cb?api_key=CANARYurl0123&{PW}"), kv("server.port", {"intValue": "443"})],
    [kv("file.path", f"/tmp/{PW}")],
    [kv("dns.question.name", f"{SK}.example.test")],
    [kv("anysentry.event.kind", everything())],
    [kv("anysentry.event.kind", "security_finding"), kv("anysentry.security.kind", everything()),
     kv("anysentry.status", everything())],
    [kv("event.name", everything())],
    [kv("anysentry.workspace", everything()), kv("anysentry.agent.id", everything()),
     kv("anysentry.session.id", everything()), kv("user.id", everything()), kv("log.record.uid", everything())],
    [kv("content", everything("content "))],
    [],
]


def otlp_body():
    logs, spans = [], []
    for n, extra in enumerate(RECORD_VARIANTS):
        attributes = [*extra, *secret_attrs()]
        logs.append({"timeUnixNano": "1719619200000000000", "severityText": everything(), "eventName": everything(),
                     "body": {"stringValue": everything("log ") + ' {"password": "CANARYjsonbody0123"}'},
                     "traceId": everything(), "spanId": SK, "attributes": attributes})
        logs.append({"timeUnixNano": 1719619200000000000, "attributes": attributes,
                     "body": {"kvlistValue": {"values": [kv("password", "CANARYbodykv0123"), kv("msg", everything())]}}})
        spans.append({"traceId": "5b8efff798038103d269b633813fc60c", "spanId": f"{n:016x}", "parentSpanId": SK,
                      "name": everything("span "), "startTimeUnixNano": "1719619200000000000",
                      "endTimeUnixNano": "1719619201000000000", "attributes": attributes,
                      "status": {"code": 2, "message": everything()}})
    # plain logs: the body is the judged SslContent, with a JSON secret that escaping would hide
    logs.append({"timeUnixNano": "1719619200000000000",
                 "body": {"stringValue": 'note {"password": "CANARYjsonbody0123", "secret_value": "x"} ' + ALL}})
    logs.append({"body": {"stringValue": "curl -H 'Authorization: Bearer CANARYplain0123456' " + PW},
                 "attributes": [kv("content", 'payload {"api_key": "CANARYcontent0123"} ' + ALL)]})
    scope = {"name": everything(), "version": everything()}
    return {
        "sourceName": everything(), "sourceId": everything(), "collectorId": everything(), "token": TOKEN,
        "agentId": everything(), "workspacePath": everything(), "sessionId": everything(), "traceId": everything(),
        "runId": everything(), "nodeName": everything(), "userId": everything(), "taskId": everything(),
        "resourceLogs": [{"resource": otlp_resource(), "scopeLogs": [{"scope": scope, "logRecords": logs}]}],
        "resourceSpans": [{"resource": otlp_resource(), "scopeSpans": [{"scope": scope, "spans": spans}]}],
    }


def test_otlp_never_leaks():
    parsed = parse_otlp_body(orjson.dumps(otlp_body()))
    kinds = {normalize(i, default_source="api").event.eventKind for i in parsed.items if not isinstance(i, Rejection)}
    assert {"ToolExec", "LlmApi", "Egress", "FileAccess", "Dns", "SecurityAction", "RuntimeEvent", "SslContent"} <= kinds
    assert_clean(parsed)


def test_otlp_without_body_defaults_never_leaks():
    body = otlp_body()
    for key in ("agentId", "workspacePath", "sessionId", "userId"):
        body.pop(key)
    assert_clean(parse_otlp_body(body))


# --------------------------------------------------------------------------- Falco

def falco_alert(fields):
    return {
        "hostname": everything(), "output": everything("Warning shell ") + " command=mysql -u root",
        "priority": everything(), "rule": everything("rule "), "source": everything(), "uuid": everything(),
        "tags": [everything(), SK], "time": everything(),
        "output_fields": {**fields, **SECRET_KEYS, "evt.arg.api_key": "CANARYevtapikey0123",
                          "k8s.ns.name": everything(), "k8s.pod.name": everything(),
                          "container.id": everything(), "container.name": everything(),
                          f"k8s.pod.label[{SK}]": "x", "k8s.pod.label[anysentry.io/agent-id]": everything(),
                          "k8s.pod.labels": f"app:{SK}, {PW}:x", "user.name": everything(),
                          "proc.cwd": f"/home/{PW}", "proc.name": everything(), "proc.exepath": f"/tmp/{SK}",
                          "proc.args": everything(), "proc.pname": everything(),
                          "nested.list": [everything()], "nested.obj": {"password": "CANARYnestedfalco0123"}},
    }


FALCO_VARIANTS = [
    {"evt.type": "execve", "proc.cmdline": f"curl -H '{AUTH}' https://x.test --data {PW} {SK}"},
    {"evt.type": "execve"},
    {"evt.type": "openat", "fd.name": f"/tmp/{PW}/{SK}", "evt.arg.flags": everything()},
    {"evt.type": "connect", "fd.sip": everything(), "fd.sport": 443, "fd.sip.name": everything()},
    {"evt.type": "connect", "fd.name": f"10.0.0.1:1->{SK}:80"},
    {"evt.type": "unlinkat", "evt.arg.name": f"/tmp/{PW}"},
    {"dns.query": f"{SK}.example"},
    {"evt.type": "setuid", "evt.arg.uid": "0(root)"},
    {"evt.type": "ptrace", "evt.arg.pid": everything()},
    {"evt.type": everything()},
    {},
]


def test_falco_never_leaks():
    alerts = [falco_alert(fields) for fields in FALCO_VARIANTS]
    host = falco_alert({"proc.cmdline": everything()})
    host["output_fields"].update({"container.id": "host", "container.name": "host", "k8s.ns.name": None,
                                  "k8s.pod.name": None})
    alerts.append(host)
    wrapper = {"events": alerts, "token": TOKEN, "sourceName": everything(), "collectorId": everything(),
               "agentId": everything(), "workspacePath": everything(), "nodeName": everything()}
    parsed = parse_falco_body(orjson.dumps(wrapper))
    assert_clean(parsed)
    ndjson = b"\n".join(orjson.dumps(a) for a in alerts) + b"\n" + everything().encode()
    assert_clean(parse_falco_body(ndjson))


# --------------------------------------------------------------------------- Tetragon

def tetragon_process():
    return {
        "exec_id": everything(), "pid": 10, "uid": 1000, "cwd": f"/home/{PW}", "binary": f"/tmp/{SK}",
        "arguments": f"--token=CANARYtetratok0123 -H '{AUTH}' {PW} {SK}", "flags": everything(),
        "pod": {"namespace": everything(), "name": everything(), "workload": everything(), "workload_kind": everything(),
                "container": {"id": f"containerd://{SK}", "name": everything(),
                              "image": {"id": everything(), "name": everything()}},
                "pod_labels": {**SECRET_KEYS, "app": everything(), SK: "v", "anysentry.io/agent-id": everything()}},
        "parent_exec_id": everything(),
    }


def tetragon_events():
    parent = {"binary": everything(), "arguments": everything(), "pid": 9}
    base = {"node_name": everything(), "time": everything(), "cluster_name": everything()}
    probe_args = [
        ("tcp_connect", [{"sock_arg": {"daddr": everything(), "dport": 80, "saddr": everything()}}]),
        ("security_file_permission", [{"file_arg": {"path": f"/etc/{PW}", "permission": everything()}}, {"int_arg": 4}]),
        ("__x64_sys_openat", [{"int_arg": -100}, {"string_arg": f"/tmp/{SK}"}, {"int_arg": 0}]),
        ("__x64_sys_setuid", [{"int_arg": 0}]),
        ("__x64_sys_ptrace", [{"int_arg": 16}, {"int_arg": 4242}]),
        ("inet_csk_listen_start", [{"sock_arg": {"sport": 4444}}]),
        ("security_path_unlink", [{"path_arg": {"path": f"/tmp/{PW}"}}]),
        (everything(), [{"string_arg": everything()}, {"bytes_arg": SK}, {"secret": "CANARYargkey0123"}]),
    ]
    docs = [{"process_exec": {"process": tetragon_process(), "parent": parent}, **base},
            {"process_exit": {"process": tetragon_process(), "parent": parent, "signal": everything(), "status": 1}, **base}]
    for function, args in probe_args:
        docs.append({"process_kprobe": {"process": tetragon_process(), "parent": parent, "function_name": function,
                                        "args": args, "policy_name": everything(), "action": everything()}, **base})
    docs.append({"process_tracepoint": {"process": tetragon_process(), "subsys": everything(), "event": everything(),
                                        "args": [{"string_arg": everything()}]}, **base})
    docs.append({"process_uprobe": {"process": tetragon_process(), "path": everything(), "symbol": everything()}, **base})
    host = {"process_exec": {"process": {"pid": 1, "cwd": f"/root/{PW}", "binary": f"/usr/bin/{SK}",
                                         "arguments": everything()}}, **base}
    docs.append(host)
    docs.append({everything(): {"x": 1}})  # unknown event type: the reason must not leak either
    return docs


def test_tetragon_never_leaks():
    docs = tetragon_events()
    wrapper = {"events": docs, "token": TOKEN, "sourceName": everything(), "collectorId": everything(),
               "sessionId": everything(), "nodeName": everything()}
    parsed = parse_tetragon_body(orjson.dumps(wrapper))
    kinds = {normalize(i, default_source="api").event.eventKind for i in parsed.items if not isinstance(i, Rejection)}
    assert {"ToolExec", "ProcessExit", "Egress", "FileAccess", "SecurityAction", "FileDelete", "RuntimeEvent"} <= kinds
    assert_clean(parsed)
    assert_clean(parse_tetragon_body(b"\n".join(orjson.dumps(d) for d in docs)))


@pytest.mark.parametrize("parser, body", [
    (parse_otlp_body, {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": ALL}}]}]}]}),
    (parse_falco_body, {"rule": ALL, "output": ALL}),
    (parse_tetragon_body, {"process_exec": {"process": {"binary": ALL, "arguments": ALL}}}),
])
def test_minimal_records_never_leak(parser, body):
    assert_clean(parser(body))
