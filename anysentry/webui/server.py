"""Run the dashboard's Panel (Bokeh/Tornado) server: in the foreground for `anysentry ui`, or on a
thread of its own inside `anysentry serve`, so page rendering never stalls the API's event loop.

Websocket origins: Bokeh refuses a browser session whose page was loaded from a host it does not
allow. `anysentry ui` runs behind a Service, a port-forward or an ingress whose host name it cannot
know, so it allows any origin unless told otherwise; `anysentry serve` on a loopback address allows
only localhost and 127.0.0.1 on its own port, so another web site open in the same browser cannot
drive the dashboard (which holds the admin token).

Public base path (SPEC §3.1 `PUBLIC_BASE_PATH`): behind an ingress that publishes the UI at a sub-path
(`/anysentry/`) and passes the path on unchanged, the server serves the page, its websocket and every
static asset under that prefix, so the browser's relative and absolute asset URLs resolve through the
same ingress rule; the root is then not the dashboard."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import threading
from dataclasses import dataclass, field

import panel as pn
from panel.io.server import get_server
from tornado.ioloop import IOLoop

from anysentry.resources.models import PUBLIC_BASE_PATH
from anysentry.webui.app import DEFAULT_REFRESH_SECS, dashboard_factory
from anysentry.webui.client import ApiClient

log = logging.getLogger("anysentry.webui")
DEFAULT_UI_PORT = 5006
LOOPBACK = ("127.0.0.1", "localhost", "::1")
UI_PORT_ENV = "ANYSENTRY_UI_PORT"


def ui_port(flag: int | None) -> int:
    """The UI port: the flag, else $ANYSENTRY_UI_PORT, else 5006 (ValueError when the variable is not a number)."""
    return flag if flag is not None else int(os.environ.get(UI_PORT_ENV, "") or DEFAULT_UI_PORT)


def normalize_base_path(value: str | None) -> str:
    """`/anysentry/`, `anysentry` and `/anysentry` are the prefix `/anysentry`; "" and "/" the root ("").
    Raises ValueError for anything else (a query, `..`, spaces) rather than serve somewhere unexpected."""
    text = (value or "").strip().rstrip("/")
    if not text:
        return ""
    text = text if text.startswith("/") else "/" + text
    if not re.fullmatch(PUBLIC_BASE_PATH, text):  # the CRD's rule (spec.ui.publicBasePath), as the API's
        raise ValueError(f"public base path must look like /anysentry, got {value!r}")
    return text


@dataclass
class UiSettings:
    api_url: str
    port: int = DEFAULT_UI_PORT
    host: str = "127.0.0.1"
    admin_token: str | None = None
    allowed_origins: list[str] = field(default_factory=list)
    refresh_secs: float = DEFAULT_REFRESH_SECS
    base_path: str = ""  # normalised (normalize_base_path): "" or "/prefix"

    def origins(self) -> list[str]:
        """The websocket origins to allow: the configured ones, else any ('*')."""
        return self.allowed_origins or ["*"]


def loopback_origins(port: int) -> list[str]:
    """Pages loaded from this machine on the UI's port (any local port when it is chosen at bind time)."""
    return [f"localhost:{port}", f"127.0.0.1:{port}"] if port else ["localhost", "127.0.0.1"]


def origins_from_env() -> list[str]:
    return [o.strip() for o in os.environ.get("ANYSENTRY_UI_ALLOWED_ORIGINS", "").split(",") if o.strip()]


def _build(settings: UiSettings, client: ApiClient):
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # one line per static file is noise
    pn.extension("tabulator")
    return get_server(dashboard_factory(client, settings.refresh_secs), port=settings.port, address=settings.host,
                      websocket_origin=settings.origins(), loop=IOLoop.current(), start=False, show=False,
                      title="AnySentry", verbose=False, location=False, prefix=settings.base_path)


async def serve_until(settings: UiSettings, stop: asyncio.Event, started=None) -> None:
    """Serve on the running loop until `stop` is set; `started(port)` is called once listening."""
    client = ApiClient(settings.api_url, settings.admin_token)
    server = _build(settings, client)
    try:
        server.start()
        if started is not None:
            started(server.port)
        await stop.wait()
    finally:
        server.stop()
        await client.close()


def run_forever(settings: UiSettings) -> None:
    """The foreground server of `anysentry ui`: until SIGINT or SIGTERM."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def listening(port: int) -> None:
            # after get_server, which installs its own SIGINT handler
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            log.info("web UI on http://%s:%d%s/ (API %s)", settings.host, port, settings.base_path, settings.api_url)

        await serve_until(settings, stop, listening)
        log.info("web UI stopped")

    asyncio.run(main())


class UiThread:
    """The dashboard server on a daemon thread with its own event loop (used by `anysentry serve`)."""

    def __init__(self, settings: UiSettings):
        self.settings = settings
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="anysentry-ui", daemon=True)

    def start(self, timeout: float = 60.0) -> int:
        """Start listening and return the port; raises what prevented it (e.g. the port is taken)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the web UI did not start in time")
        if self._error is not None:
            raise self._error
        return self.port

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

            def listening(port: int) -> None:
                self.port = port
                self._ready.set()

            await serve_until(self.settings, self._stop, listening)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported to start(); after start, only logged
            if not self._ready.is_set():
                self._error = exc
            else:
                log.exception("web UI server failed")
        finally:
            self._ready.set()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._thread.join(timeout)
