"""`anysentry collect`: the node collector (the DaemonSet the operator renders runs
`anysentry collect --mode observe`). Flags win over the environment the DaemonSet sets; a setting
the collector cannot run with ends it at once with the reason (exit 2), never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Mapping

from anysentry.collector.observer import DEFAULT_AGENT_PATTERN
from anysentry.collector.settings import (
    BATCH_LIMIT,
    DEFAULT_BUFFER_DIR,
    DEFAULT_HEALTH_PORT,
    DEFAULT_INGEST_URL,
    CollectorSettings,
    SettingsError,
)

EPILOG = f"""\
what it collects:
  procfs     every --interval the host proc directory is read: a new or exec'd process of interest
             becomes an observer ToolExec line, its end a ProcessExit, each new ESTABLISHED TCP
             connection it holds to a peer off the host an Egress. Of interest: processes in a
             Kubernetes pod cgroup (path contains "kubepods") whose name matches --agent-pattern
             (tried on the script name, the program name, then comm), and all their descendants;
             --all-processes takes every process. identity.agent = the matched name,
             identity.session = the pod UID. Default pattern:
             {DEFAULT_AGENT_PATTERN}
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
                     help=f"api base URL; /security-center is added when missing (default $ANYSENTRY_INGEST_URL or {DEFAULT_INGEST_URL})")
    api.add_argument("--source-id", metavar="ID", help="source id the events are ingested under (default $ANYSENTRY_SOURCE_ID)")
    api.add_argument("--source-type", metavar="TYPE", help="source type (default $ANYSENTRY_SOURCE_TYPE or observer)")
    api.add_argument("--source-name", metavar="NAME", help="source name, for auto-discovered sources (default $ANYSENTRY_SOURCE_NAME)")
    api.add_argument("--token-file", metavar="PATH",
                     help="file holding the ingest token; may appear later, re-read on change (default $ANYSENTRY_INGEST_TOKEN_FILE)")
    api.add_argument("--collector-id", metavar="ID", help="collector id in heartbeats and events (default $POD_NAME or the host name)")
    api.add_argument("--node-name", metavar="NAME", help="node name (default $NODE_NAME or the host name)")
    api.add_argument("--namespace", metavar="NS", help="the collector pod's namespace, for heartbeats (default $POD_NAMESPACE)")
    api.add_argument("--mode", choices=["observe"], help="collector mode; only observe exists (default $ANYSENTRY_COLLECTOR_MODE or observe)")

    sources = parser.add_argument_group("what to collect")
    sources.add_argument("--host-proc", metavar="DIR", help="the host's proc directory (default $ANYSENTRY_HOST_PROC or /proc)")
    sources.add_argument("--interval", type=float, metavar="SECS", help="procfs poll interval (default $ANYSENTRY_COLLECTOR_INTERVAL or 1)")
    sources.add_argument("--agent-pattern", metavar="REGEX",
                         help="regular expression (case-insensitive) naming agent processes (default $ANYSENTRY_AGENT_PATTERN or the pattern below)")
    sources.add_argument("--all-processes", action="store_true", help="observe every process, not only agent processes in pods")
    sources.add_argument("--no-procfs", action="store_true", help="do not run the procfs observer (forward files only)")
    sources.add_argument("--ndjson", action="append", default=[], metavar="PATH",
                         help="a3s-observer NDJSON file or glob to follow; '-' reads standard input; repeatable")
    sources.add_argument("--falco", action="append", default=[], metavar="PATH",
                         help="Falco JSON alert file or glob to follow; '-' reads standard input; repeatable")
    sources.add_argument("--tetragon", action="append", default=[], metavar="PATH",
                         help="Tetragon JSON export file or glob to follow; '-' reads standard input; repeatable")

    shipping = parser.add_argument_group("buffering and shipping")
    shipping.add_argument("--buffer-dir", metavar="DIR",
                          help=f"disk buffer and file offsets (default $ANYSENTRY_COLLECTOR_BUFFER_DIR or {DEFAULT_BUFFER_DIR})")
    shipping.add_argument("--buffer-max-mb", type=int, default=256, metavar="MIB",
                          help="disk buffer bound; when full the oldest events are dropped and counted (default 256)")
    shipping.add_argument("--batch-size", type=int, default=BATCH_LIMIT, metavar="N",
                          help=f"items per ingest request, at most {BATCH_LIMIT} (default {BATCH_LIMIT})")
    shipping.add_argument("--flush-interval", type=float, default=0.25, metavar="SECS",
                          help="how often followed files are read and the buffer is checked (default 0.25)")
    shipping.add_argument("--max-backoff", type=float, default=60.0, metavar="SECS",
                          help="longest wait between retries when the api is unavailable (default 60)")
    shipping.add_argument("--request-timeout", type=float, default=30.0, metavar="SECS",
                          help="timeout of one request to the api (default 30)")
    shipping.add_argument("--heartbeat-interval", type=float, metavar="SECS",
                          help="seconds between heartbeats (default $ANYSENTRY_HEARTBEAT_SECS or 30)")

    health = parser.add_argument_group("health")
    health.add_argument("--health-port", type=int, metavar="PORT",
                        help=f"port of GET /healthz; 0 picks a free one (default $ANYSENTRY_COLLECTOR_HEALTH_PORT or {DEFAULT_HEALTH_PORT})")
    health.add_argument("--health-host", default="0.0.0.0", metavar="ADDR", help="address of the health endpoint (default 0.0.0.0)")
    health.add_argument("--no-health", action="store_true", help="do not serve the health endpoint")
    health.add_argument("--degraded-after", type=float, default=120.0, metavar="SECS",
                        help="report degraded once the api has been unreachable this long (default 120)")
    parser.add_argument("--log-level", default="INFO", help="log level (default INFO)")


def _number(value, env: Mapping[str, str], name: str, default: float, kind=float):
    if value is not None:
        return value
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def settings_from(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> CollectorSettings:
    env = os.environ if env is None else env
    host = socket.gethostname()
    return CollectorSettings(
        ingest_url=args.ingest_url or env.get("ANYSENTRY_INGEST_URL") or DEFAULT_INGEST_URL,
        source_id=args.source_id or env.get("ANYSENTRY_SOURCE_ID", ""),
        source_type=args.source_type or env.get("ANYSENTRY_SOURCE_TYPE") or "observer",
        source_name=args.source_name or env.get("ANYSENTRY_SOURCE_NAME", ""),
        token_file=args.token_file or env.get("ANYSENTRY_INGEST_TOKEN_FILE", ""),
        token_env=env.get("ANYSENTRY_INGEST_TOKEN", ""),
        collector_id=args.collector_id or env.get("POD_NAME") or host,
        node_name=args.node_name or env.get("NODE_NAME") or host,
        namespace=args.namespace or env.get("POD_NAMESPACE", ""),
        pod_name=env.get("POD_NAME", ""),
        mode=args.mode or env.get("ANYSENTRY_COLLECTOR_MODE") or "observe",
        procfs=not args.no_procfs,
        host_proc=args.host_proc or env.get("ANYSENTRY_HOST_PROC") or "/proc",
        interval=_number(args.interval, env, "ANYSENTRY_COLLECTOR_INTERVAL", 1.0),
        all_processes=args.all_processes,
        agent_pattern=args.agent_pattern or env.get("ANYSENTRY_AGENT_PATTERN") or DEFAULT_AGENT_PATTERN,
        ndjson=tuple(args.ndjson), falco=tuple(args.falco), tetragon=tuple(args.tetragon),
        buffer_dir=args.buffer_dir or env.get("ANYSENTRY_COLLECTOR_BUFFER_DIR") or DEFAULT_BUFFER_DIR,
        buffer_max_bytes=args.buffer_max_mb * 1024 * 1024,
        batch_size=args.batch_size,
        flush_interval=args.flush_interval,
        max_backoff=args.max_backoff,
        request_timeout=args.request_timeout,
        heartbeat_interval=_number(args.heartbeat_interval, env, "ANYSENTRY_HEARTBEAT_SECS", 30.0),
        health=not args.no_health,
        health_host=args.health_host,
        health_port=_number(args.health_port, env, "ANYSENTRY_COLLECTOR_HEALTH_PORT", DEFAULT_HEALTH_PORT, int),
        degraded_after=args.degraded_after,
    )


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
