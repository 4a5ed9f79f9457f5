"""The `anysentry` command: one entry point, one sub-command per runtime role (DESIGN.md §2).

Only the chosen sub-command's module is imported, so `anysentry judge` does not pay for the store,
the API or Kubernetes clients."""

from __future__ import annotations

import argparse
import importlib
import sys

# sub-command → (module with `add_arguments(parser)` and `run(args) -> int`, help)
COMMANDS = {
    "serve": ("anysentry.serve", "everything in one process on the embedded store (API, judge, operations, UI)"),
    "api": ("anysentry.api.command", "the ingest/judge/query API service (cluster Deployment)"),
    "judge": ("anysentry.judge.command", "judge observer NDJSON from stdin, one decision line per event"),
    "crds": ("anysentry.resources.command", "render the CRD manifests from the models"),
    "operator": ("anysentry.operator.command", "the Kubernetes operator (kopf)"),
    "collect": ("anysentry.collector.command", "the node collector: procfs observer, NDJSON/Falco/Tetragon forwarder, disk buffer, heartbeats"),
    "ui": ("anysentry.webui.command", "the web dashboard (Panel), a client of the API"),
}


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anysentry", description="Security observability and intervention plane for AI agents.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        if name == selected:
            importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
