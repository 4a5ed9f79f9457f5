"""Falco alerts (`POST /ingest/falco`): the stock rules' JSON as Falco's http_output and falcosidekick
send it, mapped to action events plus a producer finding, and every malformed shape."""

from __future__ import annotations

import orjson
import pytest

from anysentry.events.errors import BodyError
from anysentry.events.falco import parse_falco_body, workload_from_pod
from anysentry.events.model import Observation, Rejection
from anysentry.events.observer import normalize

TERMINAL_SHELL = {
    "hostname": "worker-1",
    "output": "19:43:07.466512186: Notice A shell was spawned in a container with an attached terminal "
              "(evt_type=execve user=root user_uid=0 user_loginuid=-1 process=bash proc_exepath=/usr/bin/bash "
              "parent=runc command=bash terminal=34816 exe_flags=EXE_WRITABLE container_id=3ad7b26ded6d "
              "container_image=docker.io/library/python container_image_tag=3.12-slim container_name=agent "
              "k8s_ns=agents k8s_pod_name=code-agent-7d9c8b5f4-x2k9q)",
    "output_fields": {
        "container.id": "3ad7b26ded6d",
        "container.image.repository": "docker.io/library/python",
        "container.image.tag": "3.12-slim",
        "container.name": "agent",
        "evt.arg.flags": "EXE_WRITABLE",
        "evt.time": 1719619387466512186,
        "evt.type": "execve",
        "k8s.ns.name": "agents",
        "k8s.pod.name": "code-agent-7d9c8b5f4-x2k9q",
        "proc.cmdline": "bash",
        "proc.exepath": "/usr/bin/bash",
        "proc.name": "bash",
        "proc.pid": 28401,
        "proc.pname": "runc",
        "proc.tty": 34816,
        "user.loginuid": -1,
        "user.name": "root",
        "user.uid": 0,
    },
    "priority": "Notice",
    "rule": "Terminal shell in container",
    "source": "syscall",
    "tags": ["T1059", "container", "maturity_stable", "mitre_execution", "shell"],
    "time": "2024-06-29T00:03:07.466512186Z",
}

READ_SENSITIVE = {
    "hostname": "worker-2",
    "output": "10:12:44.120558409: Warning Sensitive file opened for reading by non-trusted program "
              "(file=/etc/shadow gparent=bash ggparent=containerd-shim evt_type=openat user=root user_uid=0 "
              "user_loginuid=-1 process=cat proc_exepath=/usr/bin/cat parent=sh command=cat /etc/shadow terminal=0 "
              "container_id=91f4d3c2aa10 container_name=agent)",
    "output_fields": {
        "container.id": "91f4d3c2aa10",
        "container.name": "agent",
        "evt.arg.flags": "O_RDONLY|O_CLOEXEC",
        "evt.type": "openat",
        "fd.name": "/etc/shadow",
        "k8s.ns.name": "agents",
        "k8s.pod.name": "research-agent-0",
        "k8s.pod.label[anysentry.io/agent-id]": "research-agent",
        "proc.aname[2]": "bash",
        "proc.cmdline": "cat /etc/shadow",
        "proc.cwd": "/workspace/",
        "proc.exepath": "/usr/bin/cat",
        "proc.name": "cat",
        "proc.pid": 7781,
        "proc.pname": "sh",
        "user.name": "root",
        "user.uid": 0,
    },
    "priority": "Warning",
    "rule": "Read sensitive file untrusted",
    "source": "syscall",
    "tags": ["T1555", "container", "filesystem", "host", "maturity_stable", "mitre_credential_access"],
    "time": "2024-06-29T10:12:44.120558409Z",
    "uuid": "8b9f1c44-2f6e-4c34-9c1a-6f0a3c8e2b11",
}

C2_OUTBOUND = {
    "hostname": "worker-3",
    "output": "14:01:55.009877120: Warning Outbound connection to C2 server (c2_domain=c2.badcorp.example "
              "c2_addr=203.0.113.66 connection=10.244.1.17:51514->203.0.113.66:443 lport=51514 rport=443 "
              "fd_type=ipv4 fd_proto=tcp evt_type=connect user=agent user_uid=1000 process=python3 "
              "command=python3 /app/agent.py container_id=c0ffee123456 container_name=worker)",
    "output_fields": {
        "container.id": "c0ffee123456",
        "container.name": "worker",
        "evt.type": "connect",
        "fd.l4proto": "tcp",
        "fd.lport": 51514,
        "fd.name": "10.244.1.17:51514->203.0.113.66:443",
        "fd.rport": 443,
        "fd.sip": "203.0.113.66",
        "fd.sip.name": "c2.badcorp.example",
        "fd.type": "ipv4",
        "k8s.ns.name": "batch",
        "k8s.pod.name": "etl-worker-5f6c9d7b8d-q2w4r",
        "proc.cmdline": "python3 /app/agent.py",
        "proc.name": "python3",
        "proc.pid": 3301,
        "user.name": "agent",
        "user.uid": 1000,
    },
    "priority": "Warning",
    "rule": "Outbound Connection to C2 Servers",
    "source": "syscall",
    "tags": ["T1041", "container", "host", "maturity_sandbox", "mitre_command_and_control", "network"],
    "time": "2024-06-29T14:01:55.009877120Z",
}

METADATA_CONNECT = {
    "output": "Warning Contact cloud metadata service from container",
    "output_fields": {"evt.type": "connect", "fd.name": "10.244.0.9:40122->169.254.169.254:80",
                      "fd.type": "ipv4", "container.id": "aa11bb22cc33", "container.name": "agent",
                      "k8s.ns.name": "agents", "k8s.pod.name": "code-agent-7d9c8b5f4-x2k9q",
                      "proc.cmdline": "curl -s http://169.254.169.254/latest/meta-data/"},
    "priority": "Warning",
    "rule": "Contact cloud metadata service from container",
    "source": "syscall",
    "time": "2024-06-29T00:00:00Z",
}

K8S_AUDIT = {
    "output": "Attach/Exec to pod (user=alice@example.com pod=code-agent ns=agents action=exec "
              "command=bash)",
    "output_fields": {"ka.target.namespace": "agents", "ka.target.name": "code-agent", "ka.user.name": "alice@example.com",
                      "ka.verb": "create", "ka.uri.param[command]": "bash"},
    "priority": "Notice",
    "rule": "Attach/Exec Pod",
    "source": "k8s_audit",
    "tags": ["k8s"],
    "time": "2024-06-29T00:00:05.000000000Z",
}


def normalized(body):
    parsed = parse_falco_body(body)
    out = []
    for item in parsed.items:
        if isinstance(item, Rejection):
            out.append(item)
            continue
        obs = normalize(item, default_source="api")
        assert isinstance(obs, Observation), obs
        out.append(obs)
    return parsed, out


def test_terminal_shell_in_container():
    parsed, evs = normalized(orjson.dumps(TERMINAL_SHELL))
    assert parsed.request == {"sourceType": "falco", "sourceName": "falco"}
    action, finding = evs
    ev = action.event
    assert ev.eventKind == "ToolExec" and ev.eventCategory == "tool" and ev.source == "api"
    assert action.judge_subject == "bash"
    assert ev.workspacePath == "agents/code-agent-7d9c8b5f4-x2k9q"
    assert ev.agentId == "code-agent"  # the Deployment behind the pod
    assert ev.sessionId == "3ad7b26ded6d"
    assert ev.userId == "uid:0"
    assert ev.at == 1719619387466
    assert ev.attributes["collectorNode"] == "worker-1"
    assert ev.attributes["falco.rule"] == "Terminal shell in container"
    assert ev.attributes["falco.priority"] == "Notice"
    assert ev.attributes["falco.source"] == "syscall"
    assert ev.attributes["falco.tags"] == "T1059,container,maturity_stable,mitre_execution,shell"
    assert ev.attributes["falco.hostname"] == "worker-1"
    assert ev.attributes["falco.output"].startswith("19:43:07.466512186: Notice A shell was spawned")
    assert len(ev.attributes["falco.output"]) <= 240
    assert ev.attributes["proc.tty"] == 34816
    assert ev.process == {"pid": 28401, "uid": 0, "comm": "bash", "exe": "/usr/bin/bash"}

    fev = finding.event
    assert fev.eventKind == "SecurityAction" and fev.eventCategory == "security"
    assert finding.judge_kind == "SecurityAction"
    # §9.4: an API SecurityAction with kind SecurityFinding / status failed is a producer finding
    assert fev.attributes["kind"] == "SecurityFinding" and fev.attributes["status"] == "failed"
    assert fev.subject == "falco Notice: Terminal shell in container"
    assert finding.judge_subject == "SecurityFinding Terminal shell in container"
    assert (fev.workspacePath, fev.agentId, fev.sessionId, fev.traceId) == (
        ev.workspacePath, ev.agentId, ev.sessionId, ev.traceId)
    assert fev.eventId != ev.eventId and fev.spanId != ev.spanId
    assert orjson.loads(fev.rawPreview)["rule"] == "Terminal shell in container"


def test_read_sensitive_file_untrusted():
    _, evs = normalized(orjson.dumps(READ_SENSITIVE))
    action, finding = evs
    ev = action.event
    assert ev.eventKind == "FileAccess" and ev.eventCategory == "file"
    assert action.judge_subject == "/etc/shadow"
    assert ev.subject == "file /etc/shadow"
    assert ev.attributes["path"] == "/etc/shadow"
    assert ev.agentId == "research-agent"  # the anysentry.io/agent-id pod label wins
    assert ev.workspacePath == "agents/research-agent-0"
    assert ev.attributes["cwd"] == "/workspace/"
    assert ev.attributes["proc.cmdline"] == "cat /etc/shadow"
    assert ev.sourceEventId == "falco:8b9f1c44-2f6e-4c34-9c1a-6f0a3c8e2b11:action"
    assert finding.event.sourceEventId == "falco:8b9f1c44-2f6e-4c34-9c1a-6f0a3c8e2b11:finding"
    assert finding.event.attributes["falco.uuid"] == "8b9f1c44-2f6e-4c34-9c1a-6f0a3c8e2b11"
    assert finding.event.attributes["falco.priority"] == "Warning"


def test_outbound_connection_to_c2():
    _, evs = normalized(orjson.dumps(C2_OUTBOUND))
    action, finding = evs
    ev = action.event
    assert ev.eventKind == "Egress" and ev.eventCategory == "network"
    assert action.judge_subject == "203.0.113.66:443"
    assert ev.subject == "egress → 203.0.113.66:443"
    assert ev.attributes["fd.sip.name"] == "c2.badcorp.example"
    assert ev.agentId == "etl-worker" and ev.workspacePath == "batch/etl-worker-5f6c9d7b8d-q2w4r"
    assert ev.userId == "uid:1000"
    assert finding.event.subject == "falco Warning: Outbound Connection to C2 Servers"


def test_metadata_connect_from_fd_name_tuple():
    _, evs = normalized(METADATA_CONNECT)
    assert evs[0].judge_kind == "Egress" and evs[0].judge_subject == "169.254.169.254:80"


def test_alert_without_action_fields_is_a_finding_only():
    _, evs = normalized(K8S_AUDIT)
    assert len(evs) == 1
    ev = evs[0].event
    assert ev.eventKind == "SecurityAction"
    assert ev.attributes["falco.source"] == "k8s_audit"
    assert ev.attributes["ka.user.name"] == "alice@example.com"
    assert ev.userId == "alice@example.com"
    assert ev.agentId == "api-agent"


@pytest.mark.parametrize("fields, kind, subject", [
    ({"evt.type": "setuid", "evt.arg.uid": "0(root)", "proc.cmdline": "exploit"}, "SecurityAction", "setuid-root 0"),
    ({"evt.type": "setuid", "evt.arg.uid": "1000(agent)"}, None, None),
    ({"evt.type": "ptrace", "evt.arg.pid": "4242(sshd)"}, "SecurityAction", "ptrace 4242"),
    ({"evt.type": "bind", "fd.name": "0.0.0.0:4444", "fd.sport": 4444}, "SecurityAction", "bind 4444"),
    ({"evt.type": "listen", "fd.lport": "8080"}, "SecurityAction", "bind 8080"),
    ({"evt.type": "unlinkat", "evt.arg.name": "/root/.bash_history"}, "FileDelete", None),
    ({"evt.type": "openat", "fd.name": "/etc/passwd", "evt.arg.flags": "O_WRONLY|O_APPEND"}, "FileAccess", "/etc/passwd"),
    ({"evt.type": "accept", "fd.name": "198.51.100.9:5555->10.0.0.5:22", "fd.type": "ipv4"}, "Egress", "198.51.100.9:5555"),
    ({"evt.type": "sendto", "fd.rip": "10.0.0.53", "fd.rport": 53}, "Egress", "10.0.0.53:53"),
    ({"dns.query": "abc123.oast.fun"}, "Dns", "abc123.oast.fun"),
    ({"fd.name": "/var/run/secrets/kubernetes.io/serviceaccount/token"}, "FileAccess",
     "/var/run/secrets/kubernetes.io/serviceaccount/token"),
    ({"proc.exepath": "/tmp/x", "proc.args": "-c 'curl x | sh'"}, "ToolExec", "/tmp/x -c curl x | sh"),
    ({"evt.type": "chmod", "proc.cmdline": "chmod +s /bin/bash"}, None, None),
    ({"evt.type": "write", "fd.type": "file", "fd.name": "/etc/cron.d/x"}, "FileAccess", "/etc/cron.d/x"),
    ({}, None, None),
])
def test_action_mapping(fields, kind, subject):
    alert = {"rule": "r", "priority": "Critical", "output": "o", "output_fields": fields}
    _, evs = normalized(alert)
    assert evs[-1].event.eventKind == "SecurityAction" and evs[-1].event.attributes["kind"] == "SecurityFinding"
    if kind is None:
        assert len(evs) == 1
        return
    assert len(evs) == 2
    assert evs[0].judge_kind == kind
    if subject is not None:
        assert evs[0].judge_subject == subject


def test_write_flag_reaches_the_payload():
    alert = {"rule": "r", "output": "o", "output_fields": {"evt.type": "openat", "fd.name": "/etc/passwd",
                                                            "evt.arg.flags": "O_WRONLY|O_APPEND"}}
    item = parse_falco_body(alert).items[0]
    assert item["line"]["event"]["FileAccess"]["write"] is True


def test_identity_fallbacks():
    host = {"rule": "r", "output": "o", "output_fields": {"container.id": "host", "container.name": "host",
                                                         "proc.name": "sshd", "proc.cmdline": "sshd -D",
                                                         "proc.cwd": "/"}}
    ev = normalized(host)[1][0].event
    assert ev.agentId == "sshd" and ev.workspacePath == "/"  # the observer's fallback: payload cwd
    bare = {"rule": "r", "output": "o", "output_fields": {"container.id": "0123456789ab", "container.name": "db"}}
    ev = normalized(bare)[1][0].event
    assert ev.workspacePath == "container://db" and ev.agentId == "db" and ev.sessionId == "0123456789ab"
    labels = {"rule": "r", "output": "o", "output_fields": {"k8s.ns.name": "a", "k8s.pod.name": "p-1",
                                                           "k8s.pod.labels": "app:billing, tier:backend"}}
    assert normalized(labels)[1][0].event.agentId == "billing"


def test_workload_from_pod_names():
    assert workload_from_pod("code-agent-7d9c8b5f4-x2k9q") == "code-agent"
    assert workload_from_pod("node-exporter-x2k9q") == "node-exporter"
    assert workload_from_pod("research-agent-0") == "research-agent"
    assert workload_from_pod("standalone") is None
    assert workload_from_pod(None) is None


def test_forms_array_ndjson_wrapper_and_sidekick():
    array = parse_falco_body(orjson.dumps([TERMINAL_SHELL, READ_SENSITIVE, K8S_AUDIT]))
    assert len(array.items) == 5
    ndjson = b"\n".join(orjson.dumps(a) for a in (TERMINAL_SHELL, READ_SENSITIVE, K8S_AUDIT)) + b"\n\n"
    assert [i["line"] for i in parse_falco_body(ndjson).items] == [i["line"] for i in array.items]
    crlf = "\r\n".join(orjson.dumps(a).decode() for a in (TERMINAL_SHELL, K8S_AUDIT))
    assert len(parse_falco_body(crlf).items) == 3
    wrapper = {"events": [C2_OUTBOUND], "sourceId": "src_falco", "token": "ansrc_abc", "collectorId": "node-agent-1",
               "nodeName": "worker-3"}
    parsed = parse_falco_body(wrapper)
    assert parsed.request == {"sourceId": "src_falco", "token": "ansrc_abc", "collectorId": "node-agent-1",
                              "nodeName": "worker-3", "sourceType": "falco", "sourceName": "falco"}
    ev = normalize(parsed.items[0], default_source="api").event
    assert ev.collectorId == "node-agent-1"
    assert "ansrc_abc" not in orjson.dumps(ev).decode()
    # falcosidekick webhook: the same payload plus uuid; priority in other casings
    sidekick = {**READ_SENSITIVE, "priority": "warning"}
    assert normalize(parse_falco_body(sidekick).items[1], default_source="api").event.attributes["falco.priority"] == "Warning"


def test_ndjson_with_bad_lines():
    body = orjson.dumps(TERMINAL_SHELL) + b"\n{\"rule\": \"trunc\n" + b"42\n" + orjson.dumps(K8S_AUDIT)
    items = parse_falco_body(body).items
    reasons = [i.reason if isinstance(i, Rejection) else i["eventKind"] for i in items]
    assert reasons[:2] == ["ToolExec", "SecurityAction"]
    assert reasons[2].startswith("malformed JSON on line 2")
    assert reasons[3] == "invalid falco alert: not a JSON object"
    assert reasons[4] == "SecurityAction"
    assert [i.index for i in items if isinstance(i, Rejection)] == [2, 3]


@pytest.mark.parametrize("body", [
    b'{"rule": "Terminal shell in container", "output_fields": {',
    b"\xff\xfe\x00garbage",
    b"not json at all",
    b"42",
    b'"alert"',
    b"null",
    3.14,
    object(),
])
def test_body_errors(body):
    with pytest.raises(BodyError):
        parse_falco_body(body)


@pytest.mark.parametrize("alert, reason", [
    ("a string", "invalid falco alert: not a JSON object"),
    ([1, 2], "invalid falco alert: not a JSON object"),
    ({"priority": "Warning"}, "invalid falco alert: no rule or output"),
    ({"rule": {"nested": 1}, "output": ["x"]}, "invalid falco alert: no rule or output"),
])
def test_invalid_alerts_are_rejected(alert, reason):
    items = parse_falco_body([alert]).items
    assert items == [Rejection(reason, 0)]


def test_wrong_types_inside_an_alert_are_sanitised():
    alert = {"rule": "r", "output": "o", "priority": 7, "tags": "a,b", "time": {"x": 1}, "hostname": ["h"],
             "output_fields": {"proc.pid": "not a pid", "user.uid": -5, "evt.type": ["execve"],
                               "proc.cmdline": 12345, "k8s.ns.name": None, "container.id": {"id": 1},
                               "fd.rport": 70000, "fd.rip": "10.0.0.1"}}
    _, evs = normalized(alert)
    for obs in evs:
        assert isinstance(obs, Observation)
    assert evs[-1].event.attributes["falco.tags"] == "a,b"
    assert evs[-1].event.attributes["falco.priority"] == "7"
    garbage_fields = {"rule": "r", "output_fields": "not an object", "output": "x"}
    assert len(parse_falco_body(garbage_fields).items) == 1


def test_empty_and_huge():
    for body in (b"", b"   \n", None, []):
        assert parse_falco_body(body).items == []
    huge = {"rule": "R" * 100_000, "output": "O" * 1_000_000, "tags": ["t"] * 10_000,
            "output_fields": {f"k{n}": "v" * 10_000 for n in range(1000)} | {"proc.cmdline": "x " * 200_000}}
    _, evs = normalized(huge)
    for obs in evs:
        assert len(orjson.dumps(obs.event)) < 60_000
        assert len(obs.event.attributes) <= 120
    many = parse_falco_body([K8S_AUDIT] * 600).items
    assert len(many) == 501 and many[-1].reason == "too many falco events: at most 500 per request, 100 dropped"
    ndjson = b"\n".join([orjson.dumps(K8S_AUDIT)] * 620)
    many = parse_falco_body(ndjson).items
    assert len(many) == 501 and many[-1].reason == "too many falco events: at most 500 per request, 120 dropped"
