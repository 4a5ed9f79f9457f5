"""`anysentry operator`: the kopf operator (DESIGN §2) — reconciles the six custom resources,
deploys the installation's api, collector and UI, runs the operations loops once in the cluster
(kopf peering: one active replica; `--standalone` runs without peering) and writes status and Events
back onto the resources.

    anysentry operator                       # every namespace, peering "anysentry"
    anysentry operator -n security           # one namespace (repeat -n for several)
    anysentry operator --standalone -n dev   # no peering (a single replica, tests)

Settings from the environment: ANYSENTRY_IMAGE (image of the api/collector/ui Pods),
ANYSENTRY_OPERATOR_TICK_SECS (status/loop cycle, 5), ANYSENTRY_OPERATOR_OPS_INTERVAL_SECS (shortens
every engine timer), ANYSENTRY_OPERATOR_SOURCE_CHECK_SECS (token rotation check, 60)."""

from __future__ import annotations

import logging
import os

HANDLER_MODULES = ("handlers_anysentry", "handlers_source", "handlers_policy", "handlers_objective",
                   "handlers_maintenance", "handlers_notification")
PEERING = "anysentry"


def add_arguments(parser) -> None:
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=None, metavar="NS",
                       help="watch this namespace (repeatable; default: every namespace)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--standalone", action="store_true",
                        help="run without kopf peering (only when a single operator replica runs)")
    parser.add_argument("--peering", default=os.environ.get("ANYSENTRY_PEERING", PEERING),
                        help=f"kopf peering name (default {PEERING})")
    parser.add_argument("--priority", type=int, default=None,
                        help="peering priority; the highest-priority replica is the active one (default: "
                             "$ANYSENTRY_PEERING_PRIORITY, else random, so replicas never tie)")
    parser.add_argument("--liveness", default=os.environ.get("ANYSENTRY_OPERATOR_LIVENESS"),
                        help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then $KUBECONFIG)")
    parser.add_argument("--log-level", default="INFO")


def configure_kopf(settings) -> None:
    """Our conventions on top of kopf's defaults (applied in the startup handler)."""
    import kopf

    # kopf's bookkeeping goes into annotations of its own prefix, never into `status` (which the
    # CRD schemas would prune anyway, and which only the operator's status writers own)
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="operator.anysentry.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="operator.anysentry.io", key="last-handled-configuration")
    settings.persistence.finalizer = "operator.anysentry.io/finalizer"
    settings.posting.level = logging.WARNING  # our own Events say what happened; kopf's only on trouble
    settings.watching.connect_timeout = 10
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.networking.request_timeout = 30
    settings.batching.error_delays = [1, 2, 5, 10, 10, 10]


def run(args) -> int:
    import importlib

    import kopf

    from anysentry.operator.kube import Kube
    from anysentry.operator.loops import Runtime, set_runtime
    from anysentry.runner import configure_logging

    configure_logging(args.log_level)
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    for module in HANDLER_MODULES:
        importlib.import_module(f"anysentry.operator.{module}")
    set_runtime(Runtime(Kube.from_environment(args.kubeconfig)))

    @kopf.on.startup()
    async def _startup(settings: kopf.OperatorSettings, **_):
        configure_kopf(settings)

    if args.priority is None:
        import random

        args.priority = int(os.environ.get("ANYSENTRY_PEERING_PRIORITY") or random.randint(1, 1_000_000))
    namespaces = [] if args.all_namespaces else list(args.namespace or [])
    logging.getLogger("anysentry.operator").info(
        "anysentry operator: %s, %s", f"namespaces {', '.join(namespaces)}" if namespaces else "every namespace",
        "standalone" if args.standalone else f"peering {args.peering} (priority {args.priority})")
    kopf.run(
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        namespaces=namespaces or (),
        clusterwide=not namespaces,
        liveness_endpoint=args.liveness,
    )
    return 0


def main() -> None:  # pragma: no cover - `python -m anysentry.operator.command`
    import argparse

    parser = argparse.ArgumentParser(prog="anysentry operator")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))


if __name__ == "__main__":  # pragma: no cover
    main()
