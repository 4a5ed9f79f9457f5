"""`anysentry api`: the stateless ingest/judge/query service for a cluster (scale by replicas).

Configuration comes from the environment (SPEC §31). In a cluster (`ANYSENTRY_KUBE_NAMESPACE` set,
as the operator renders it) the operations engine that folds events into incidents and runs the loops
is the operator's; `ANYSENTRY_OPERATIONS=local|operator` overrides that choice."""

from __future__ import annotations

import asyncio
import os
import sys

from anysentry.api.app import ApiSettings, SettingsError, build_app
from anysentry.api.services import Services
from anysentry.runner import configure_logging, serve_app


def add_arguments(parser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT or 29653)")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    configure_logging(args.log_level)
    from anysentry.operator import mirror, pods, policy_sync  # in a cluster: CRs are the truth (no-ops elsewhere)

    try:
        settings = ApiSettings.from_env(host=args.host, port=args.port)
    except SettingsError as exc:  # e.g. a PUBLIC_BASE_PATH that is not a path
        print(f"anysentry api: {exc}", file=sys.stderr)
        return 2
    in_cluster = bool(os.environ.get("ANYSENTRY_KUBE_NAMESPACE", "").strip())
    operations = os.environ.get("ANYSENTRY_OPERATIONS", "").strip() or ("operator" if in_cluster else "local")
    if operations not in ("local", "operator"):
        print(f"anysentry api: ANYSENTRY_OPERATIONS must be 'local' or 'operator', not {operations!r}", file=sys.stderr)
        return 2
    services = Services(operations=operations)
    policy_sync.attach(services)
    mirror.attach(services)
    pods.attach(services)  # pod identity at ingest (SPEC §7.6); no-op outside a cluster
    app = build_app(services, settings)
    asyncio.run(serve_app(app, settings.host, settings.port, banner="anysentry api "))
    return 0
