"""`anysentry collect`: the node collector (the DaemonSet the operator renders runs
`anysentry collect --mode observe`). Flags win over the environment the DaemonSet sets; a setting
the collector cannot run with ends it at once with the reason (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import signal
import sys
from collections.abc import Mapping

from anysentry.api.limits import BATCH_LIMIT
from anysentry.collector.settings import CollectorSettings, SettingsError

# what the flags and the environment leave unset: CollectorSettings' defaults, quoted in --help
DEFAULTS = {f.name: f.default for f in dataclasses.fields(CollectorSettings) if f.default is not dataclasses.MISSING}
_MIB = 1024 * 1024


def _default(name: str) -> str:
    value = DEFAULTS[name]
    return f"{value:g}" if isinstance(value, float) else str(value)


EPILOG = f"""\
what it collects:
  procfs     every --interval the host proc directory is read: a new or exec'd process of interest
             becomes an observer ToolExec line, its end a ProcessExit, each new ESTABLISHED TCP
             connection it holds to a peer off the host an Egress. Of interest: processes in a
             Kubernetes pod cgroup (path contains "kubepods") whose name matches --agent-pattern
             (tried on the script name, the program name, then comm), and all their descendants;
             --all-processes takes every process. identity.agent = the matched name,
             identity.session = the pod UID. Default pattern:
             {DEFAULTS['agent_pattern']}
  --ndjson   a3s-observer NDJSON files, forwarded line by line to /ingest/batch
  --falco    Falco JSON alerts (json_output), posted to /ingest/falco
  --tetragon Tetragon JSON export events, posted to /ingest/tetragon
  Files are followed across appends, rotation and truncation; offsets are kept in the buffer
  directory so a restart resumes. Everything goes through the disk buffer before it is sent.

environment (flags win):
  ANYSENTRY_INGEST_URL, ANYSENTRY_SOURCE_ID, ANYSENTRY_SOURCE_TYPE, ANYSENTRY_SOURCE_NAME,
  ANYSENTRY_INGEST_TOKEN_FILE (re-read when it changes), ANYSENTRY_INGEST_TOKEN (used when the file
  is absent or empty), POD_NAME (the collector id; default the host name), NODE_NAME,
  POD_NAMESPACE, ANYSENTRY_COLLECTOR_MODE, ANYSENTRY_HOST_PROC, ANYSENTRY_COLLECTOR_INTERVAL,
  ANYSENTRY_AGENT_PATTERN, ANYSENTRY_COLLECTOR_BUFFER_DIR, ANYSENTRY_HEARTBEAT_SECS,
  ANYSENTRY_COLLECTOR_HEALTH_PORT

health:
  GET /healthz on the health port answers 200 with status "ok", or "degraded" (and why) when the
  api has been unreachable for --degraded-after seconds or events were dropped, with the buffer
  depth; 503 when a collector loop stopped."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    api = parser.add_argument_group("api")
    api.add_argument("--ingest-url", metavar="URL",
                     help=f"api base URL; /security-center is added when missing (default $ANYSENTRY_INGEST_URL or {_default('ingest_url')})")
    api.add_argument("--source-id", metavar="ID", help="source id the events are ingested under (default $ANYSENTRY_SOURCE_ID)")
    api.add_argument("--source-type", metavar="TYPE", help=f"source type (default $ANYSENTRY_SOURCE_TYPE or {_default('source_type')})")
    api.add_argument("--source-name", metavar="NAME", help="source name, for auto-discovered sources (default $ANYSENTRY_SOURCE_NAME)")
    api.add_argument("--token-file", metavar="PATH",
                     help="file holding the ingest token; may appear later, re-read on change (default $ANYSENTRY_INGEST_TOKEN_FILE)")
    api.add_argument("--collector-id", metavar="ID", help="collector id in heartbeats and events (default $POD_NAME or the host name)")
    api.add_argument("--node-name", metavar="NAME", help="node name (default $NODE_NAME or the host name)")
    api.add_argument("--namespace", metavar="NS", help="the collector pod's namespace, for heartbeats (default $POD_NAMESPACE)")
    api.add_argument("--mode", choices=["observe"], help=f"collector mode; only observe exists (default $ANYSENTRY_COLLECTOR_MODE or {_default('mode')})")

    sources = parser.add_argument_group("what to collect")
    sources.add_argument("--host-proc", metavar="DIR", help=f"the host's proc directory (default $ANYSENTRY_HOST_PROC or {_default('host_proc')})")
    sources.add_argument("--interval", type=float, metavar="SECS", help=f"procfs poll interval (default $ANYSENTRY_COLLECTOR_INTERVAL or {_default('interval')})")
    sources.add_argument("--agent-pattern", metavar="REGEX",
                         help="regular expression (case-insensitive) naming agent processes (default $ANYSENTRY_AGENT_PATTERN or the pattern below)")
    sources.add_argument("--all-processes", action="store_true", help="observe every process, not only agent processes in pods")
    sources.add_argument("--no-procfs", action="store_true", help="do not run the procfs observer (forward files only)")
    sources.add_argument("--ndjson", action="append", metavar="PATH",
                         help="a3s-observer NDJSON file or glob to follow; '-' reads standard input; repeatable")
    sources.add_argument("--falco", action="append", metavar="PATH",
                         help="Falco JSON alert file or glob to follow; '-' reads standard input; repeatable")
    sources.add_argument("--tetragon", action="append", metavar="PATH",
                         help="Tetragon JSON export file or glob to follow; '-' reads standard input; repeatable")

    shipping = parser.add_argument_group("buffering and shipping")
    shipping.add_argument("--buffer-dir", metavar="DIR",
                          help=f"disk buffer and file offsets (default $ANYSENTRY_COLLECTOR_BUFFER_DIR or {_default('buffer_dir')})")
    shipping.add_argument("--buffer-max-mb", type=int, metavar="MIB",
                          help="disk buffer bound; when full the oldest events are dropped and counted "
                               f"(default {DEFAULTS['buffer_max_bytes'] // _MIB})")
    shipping.add_argument("--batch-size", type=int, metavar="N",
                          help=f"items per ingest request, at most {BATCH_LIMIT} (default {_default('batch_size')})")
    shipping.add_argument("--flush-interval", type=float, metavar="SECS",
                          help=f"how often followed files are read and the buffer is checked (default {_default('flush_interval')})")
    shipping.add_argument("--max-backoff", type=float, metavar="SECS",
                          help=f"longest wait between retries when the api is unavailable (default {_default('max_backoff')})")
    shipping.add_argument("--request-timeout", type=float, metavar="SECS",
                          help=f"timeout of one request to the api (default {_default('request_timeout')})")
    shipping.add_argument("--heartbeat-interval", type=float, metavar="SECS",
                          help=f"seconds between heartbeats (default $ANYSENTRY_HEARTBEAT_SECS or {_default('heartbeat_interval')})")

    health = parser.add_argument_group("health")
    health.add_argument("--health-port", type=int, metavar="PORT",
                        help=f"port of GET /healthz; 0 picks a free one (default $ANYSENTRY_COLLECTOR_HEALTH_PORT or {_default('health_port')})")
    health.add_argument("--health-host", metavar="ADDR",
                        help=f"address of the health endpoint (default {_default('health_host')})")
    health.add_argument("--no-health", action="store_true", help="do not serve the health endpoint")
    health.add_argument("--degraded-after", type=float, metavar="SECS",
                        help=f"report degraded once the api has been unreachable this long (default {_default('degraded_after')})")
    parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")


def _texts(args: argparse.Namespace) -> dict[str, tuple[str | None, str]]:
    """field → (flag value, environment variable) of the text settings."""
    return {
        "ingest_url": (args.ingest_url, "ANYSENTRY_INGEST_URL"),
        "source_id": (args.source_id, "ANYSENTRY_SOURCE_ID"),
        "source_type": (args.source_type, "ANYSENTRY_SOURCE_TYPE"),
        "source_name": (args.source_name, "ANYSENTRY_SOURCE_NAME"),
        "token_file": (args.token_file, "ANYSENTRY_INGEST_TOKEN_FILE"),
        "token_env": (None, "ANYSENTRY_INGEST_TOKEN"),
        "collector_id": (args.collector_id, "POD_NAME"),
        "node_name": (args.node_name, "NODE_NAME"),
        "namespace": (args.namespace, "POD_NAMESPACE"),
        "pod_name": (None, "POD_NAME"),
        "mode": (args.mode, "ANYSENTRY_COLLECTOR_MODE"),
        "host_proc": (args.host_proc, "ANYSENTRY_HOST_PROC"),
        "agent_pattern": (args.agent_pattern, "ANYSENTRY_AGENT_PATTERN"),
        "buffer_dir": (args.buffer_dir, "ANYSENTRY_COLLECTOR_BUFFER_DIR"),
    }


def _env_number(env: Mapping[str, str], name: str, kind=float):
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorSettings:
    """The settings the flags (first) and the environment give; CollectorSettings fills in the rest."""
    env = os.environ if env is None else env
    given: dict = {}
    for name, (flag, variable) in _texts(args).items():
        if value := flag or env.get(variable):  # an empty flag or variable counts as not given
            given[name] = value
    for name, flag, variable, kind in (("interval", args.interval, "ANYSENTRY_COLLECTOR_INTERVAL", float),
                                       ("heartbeat_interval", args.heartbeat_interval, "ANYSENTRY_HEARTBEAT_SECS", float),
                                       ("health_port", args.health_port, "ANYSENTRY_COLLECTOR_HEALTH_PORT", int)):
        value = flag if flag is not None else _env_number(env, variable, kind)
        if value is not None:
            given[name] = value
    for name in ("batch_size", "flush_interval", "max_backoff", "request_timeout", "health_host", "degraded_after"):
        if (value := getattr(args, name)) is not None:
            given[name] = value
    if args.buffer_max_mb is not None:
        given["buffer_max_bytes"] = args.buffer_max_mb * _MIB
    for name in ("ndjson", "falco", "tetragon"):
        if paths := getattr(args, name):
            given[name] = tuple(paths)
    if args.no_procfs:
        given["procfs"] = False
    if args.all_processes:
        given["all_processes"] = True
    if args.no_health:
        given["health"] = False
    return CollectorSettings(**given)


async def _run(settings: CollectorSettings) -> None:
    from anysentry.collector.node import NodeCollector

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await NodeCollector(settings).run(stop)


def run(args: argparse.Namespace) -> int:
    from anysentry.runner import configure_logging

    configure_logging(args.log_level)
    try:
        settings = settings_from(args)
        asyncio.run(_run(settings))
    except SettingsError as exc:
        print(f"anysentry collect: error: {exc}", file=sys.stderr)
        return 2
    return 0
