"""`anysentry serve`: everything in one process on the embedded store (DESIGN §2).

API + judge + operations loops + the web UI (its own thread, talking to the local API over HTTP
like any client), state under `./.anysentry/`,
configuration from a folder of the same custom-resource manifests a cluster uses, and with
`--demo` a clearly labelled synthetic feed so a newcomer sees a live system in one command.
`PUBLIC_BASE_PATH` (SPEC §3.1) applies to both: the API also answers under the prefix and the UI is
served under it (the UI itself still calls the API on its unprefixed local address)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from anysentry.api.app import ApiSettings, SettingsError, build_app
from anysentry.api.services import Services
from anysentry.collector.demo import COLLECTOR_ID, SOURCE_NAME, DemoFeed
from anysentry.events.model import ParsedBody
from anysentry.ops.standalone import ConfigFolder
from anysentry.runner import configure_logging, serve_app
from anysentry.store.settings import StoreSettings

log = logging.getLogger("anysentry.serve")
DEMO_INTERVAL_SECS = 1.5
DEMO_HEARTBEAT_SECS = 15.0


def add_arguments(parser) -> None:
    parser.add_argument("config", nargs="?", default=None,
                        help="folder (or file) of AnySentry custom resources to apply, reloaded on change")
    parser.add_argument("--demo", action="store_true", help="add the synthetic demo feed (source 'synthetic')")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default $PORT or 29653)")
    parser.add_argument("--data-dir", default=None, help="state directory (default ./.anysentry)")
    parser.add_argument("--ui-port", type=int, default=None, help="web UI port (default $ANYSENTRY_UI_PORT or 5006)")
    parser.add_argument("--no-ui", action="store_true", help="do not start the web UI")
    parser.add_argument("--log-level", default="INFO")


async def demo_loop(services: Services, interval: float = DEMO_INTERVAL_SECS) -> None:
    feed = DemoFeed()
    request = {"sourceName": SOURCE_NAME, "sourceType": "custom", "collectorId": COLLECTOR_ID}
    since_heartbeat = DEMO_HEARTBEAT_SECS
    while True:
        if since_heartbeat >= DEMO_HEARTBEAT_SECS:
            services.collectors.record(feed.heartbeat())
            since_heartbeat = 0.0
        try:
            await services.pipeline.ingest(ParsedBody(request, feed.next_items(3)), default_type="custom",
                                           default_source="synthetic")
        except Exception as exc:  # the demo must never take the service down
            log.warning("demo feed: %s", exc)
        await asyncio.sleep(interval)
        since_heartbeat += interval


def build(args) -> tuple:
    data_dir = Path(args.data_dir or os.environ.get("ANYSENTRY_DATA_DIR", ".anysentry")).resolve()
    settings = ApiSettings.from_env(host=args.host, port=args.port, data_dir=data_dir)  # settings errors first
    store_settings = StoreSettings.from_env(data_dir=str(data_dir))
    services = Services(store_settings=store_settings)
    folder = ConfigFolder(args.config) if args.config else None
    demo = args.demo or os.environ.get("ANYSENTRY_SYNTHETIC_FEED", "off").lower() == "on"

    async def start_background(svc: Services) -> None:
        if folder is not None:
            folder.load(svc)
            svc.spawn(folder.watch(svc), "config-folder")
        svc.spawn(svc.ops.run_loops(), "ops-loops")
        if demo:
            log.info("synthetic demo feed on: events are labelled source=synthetic")
            svc.spawn(demo_loop(svc), "demo-feed")

    services.startup_hooks.append(start_background)
    return services, settings


def local_url(host: str, port: int) -> str:
    """How a client in this process reaches a server listening on `host`."""
    if host in ("", "0.0.0.0", "::", "localhost"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def start_ui(args, api_port: int, base_path: str = ""):
    """The web UI on its own thread, pointed at the local API and served under `base_path` (normalised,
    "" or "/prefix"); None (and a warning) when it cannot start."""
    from anysentry.webui.client import read_admin_token
    from anysentry.webui.server import LOOPBACK, UiSettings, UiThread, loopback_origins, origins_from_env, ui_port

    port = ui_port(args.ui_port)
    loopback = args.host in LOOPBACK
    origins = origins_from_env() or (loopback_origins(port) if loopback else [])
    api_url = local_url(args.host, api_port)
    ui = UiThread(UiSettings(api_url=api_url, port=port, host=args.host, admin_token=read_admin_token(),
                             allowed_origins=origins, base_path=base_path))
    try:
        bound = ui.start()
    except Exception as exc:  # the API is the core: run without the dashboard rather than not at all
        log.warning("web UI not started on %s:%d: %s", args.host, port, exc)
        return None
    log.info("web UI on %s%s/ (API %s)", local_url(args.host, bound), base_path, api_url)
    return ui


def run(args) -> int:
    configure_logging(args.log_level)
    try:
        services, settings = build(args)
    except SettingsError as exc:
        print(f"anysentry serve: {exc}", file=sys.stderr)
        return 2
    app = build_app(services, settings)
    if settings.public_base_path:
        log.info("public base path %s: the API also answers at %s%s/security-center", settings.public_base_path,
                 local_url(settings.host, settings.port), settings.public_base_path)
    ui = None if args.no_ui else start_ui(args, settings.port, settings.public_base_path)
    try:
        asyncio.run(serve_app(app, settings.host, settings.port, banner="anysentry serve "))
    finally:
        if ui is not None:
            ui.stop()
    return 0
