"""`anysentry collect`: its flags, the environment the operator's DaemonSet gives it, clear errors."""

from __future__ import annotations

import argparse

import pytest

from anysentry.cli import build_parser, main
from anysentry.collector.command import settings_from
from anysentry.collector.settings import CollectorSettings, SettingsError, TokenSource, api_base
from anysentry.operator import render
from anysentry.resources.manifests import validate_object


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("collect").parse_args(["collect", *argv])


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        main(["collect", "--help"])
    text = capsys.readouterr().out
    parser = build_parser("collect")
    collect = parser._subparsers._group_actions[0].choices["collect"]
    for action in collect._actions:
        assert action.help and action.help != argparse.SUPPRESS, action.option_strings
        for option in action.option_strings:
            assert option in text
    for env in ("ANYSENTRY_INGEST_TOKEN_FILE", "ANYSENTRY_HOST_PROC", "ANYSENTRY_COLLECTOR_HEALTH_PORT", "POD_NAME",
                "NODE_NAME", "kubepods", "claude"):
        assert env in text


def test_the_daemonset_the_operator_renders_configures_the_collector():
    resource, errors = validate_object({"apiVersion": "anysentry.io/v1alpha1", "kind": "AnySentry",
                                        "metadata": {"name": "prod", "namespace": "security"}, "spec": {}})
    assert not errors
    daemonset = render.collector_daemonset(resource, None, render.RenderOptions(image="anysentry/anysentry:test"))
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    field_values = {"spec.nodeName": "worker-3", "metadata.name": "prod-collector-q8x2m", "metadata.namespace": "security"}
    env = {e["name"]: e.get("value") or field_values[e["valueFrom"]["fieldRef"]["fieldPath"]] for e in container["env"]}
    assert container["args"][0] == "collect"
    settings = settings_from(build_parser("collect").parse_args(container["args"]), env)
    assert settings.ingest_url == "http://prod-api.security.svc:29653/security-center"
    assert settings.source_id == env["ANYSENTRY_SOURCE_ID"] and settings.source_type == "observer"
    assert settings.token_file == "/var/run/anysentry/ingest/token"
    assert (settings.collector_id, settings.pod_name, settings.node_name, settings.namespace) == (
        "prod-collector-q8x2m", "prod-collector-q8x2m", "worker-3", "security")
    assert settings.host_proc == "/host/proc" and settings.mode == "observe" and settings.procfs
    assert settings.health_port == container["ports"][0]["containerPort"]
    assert settings.buffer_dir.startswith("/var/lib/anysentry/")  # the writable buffer volume
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert "/var/lib/anysentry" in mounts and "/var/run/anysentry/ingest" in mounts


def test_flags_win_over_the_environment():
    env = {"ANYSENTRY_INGEST_URL": "http://api:29653", "ANYSENTRY_COLLECTOR_INTERVAL": "5", "POD_NAME": "pod-1"}
    settings = settings_from(parse("--ingest-url", "http://other:1/security-center/ingest", "--interval", "2",
                                   "--collector-id", "mine", "--ndjson", "/a", "--ndjson", "/b/*.ndjson"), env)
    assert settings.ingest_url == "http://other:1/security-center"
    assert settings.interval == 2 and settings.collector_id == "mine"
    assert settings.inputs == [("batch", "/a"), ("batch", "/b/*.ndjson")]
    assert settings_from(parse(), env).ingest_url == "http://api:29653/security-center"


@pytest.mark.parametrize("argv, env, message", [
    (["--agent-pattern", "(claude"], {}, "not a valid regular expression"),
    (["--ingest-url", "api:29653"], {}, "is not an http(s) URL"),
    (["--batch-size", "500"], {}, "batch size must be between 1 and 256"),
    (["--no-procfs"], {}, "nothing to collect"),
    (["--ndjson", "-", "--falco", "-"], {}, "standard input"),
    ([], {"ANYSENTRY_COLLECTOR_INTERVAL": "often"}, "ANYSENTRY_COLLECTOR_INTERVAL='often' is not a number"),
    (["--interval", "0"], {}, "interval must be at least"),
])
def test_settings_it_cannot_run_with_are_named(argv, env, message):
    with pytest.raises(SettingsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        settings_from(parse(*argv), env)


def test_a_bad_setting_ends_the_command_with_the_reason_and_no_traceback(capsys, tmp_path):
    assert main(["collect", "--agent-pattern", "(", "--buffer-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "anysentry collect: error: agent pattern '(' is not a valid regular expression" in err
    assert "Traceback" not in err


def test_unusable_directories_are_named(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert main(["collect", "--no-procfs", "--ndjson", "x", "--buffer-dir", str(tmp_path / "file" / "sub"),
                 "--no-health"]) == 2
    assert "cannot use buffer directory" in capsys.readouterr().err
    assert main(["collect", "--host-proc", str(tmp_path / "missing"), "--buffer-dir", str(tmp_path / "b"),
                 "--no-health"]) == 2
    assert "is not readable" in capsys.readouterr().err


def test_api_base_accepts_a_base_a_host_or_an_ingest_url():
    assert api_base("http://h:1") == "http://h:1/security-center"
    assert api_base("https://h/prefix/security-center/") == "https://h/prefix/security-center"
    assert api_base("http://h:1/security-center/ingest/batch") == "http://h:1/security-center"


def test_the_token_file_is_read_when_it_appears_and_again_when_it_changes(tmp_path):
    path = tmp_path / "token"
    token = TokenSource(str(path), fallback="from-env")
    assert token.current() == "from-env"
    path.write_text("ansrc_first\n")
    assert token.current() == "ansrc_first"
    path.write_text("ansrc_second-and-longer\n")
    assert token.current() == "ansrc_second-and-longer"
    path.write_text("")
    assert token.current() == "from-env"
    assert TokenSource("").current() == ""


def test_defaults_are_sane():
    settings = CollectorSettings()
    assert settings.interval == 1.0 and settings.batch_size == 256 and settings.heartbeat_interval == 30
    assert settings.buffer_dir == "/var/lib/anysentry/collector" and settings.health_port == 29654
    assert settings.features == ["procfs", "exec", "exit", "egress", "disk-buffer"]
