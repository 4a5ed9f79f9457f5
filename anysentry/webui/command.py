"""`anysentry ui`: the Panel dashboard, a client of the API (cluster Deployment, or beside `serve`).

The admin token comes from `--admin-token-file` (a mounted Secret) or $ANYSENTRY_ADMIN_TOKEN; it
stays on the UI server and is sent only to the API, never to the browser."""

from __future__ import annotations

import os
import sys

from anysentry.runner import configure_logging


def add_arguments(parser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port to listen on (default $ANYSENTRY_UI_PORT or 5006)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 in a Pod)")
    parser.add_argument("--api-url", default=os.environ.get("ANYSENTRY_API_URL", "http://127.0.0.1:29653"),
                        help="the API's base URL (default $ANYSENTRY_API_URL or http://127.0.0.1:29653)")
    parser.add_argument("--admin-token-file", default=None,
                        help="file holding the API admin token (default: $ANYSENTRY_ADMIN_TOKEN)")
    parser.add_argument("--allow-websocket-origin", action="append", default=None, metavar="HOST[:PORT]",
                        help="host the dashboard may be opened from (repeatable; default "
                             "$ANYSENTRY_UI_ALLOWED_ORIGINS, comma-separated, else any)")
    parser.add_argument("--public-base-path", default=os.environ.get("PUBLIC_BASE_PATH", ""), metavar="PATH",
                        help="serve under this path prefix, e.g. /anysentry/ behind an ingress at that sub-path "
                             "(default $PUBLIC_BASE_PATH, else /)")
    parser.add_argument("--refresh-secs", type=float, default=5.0, help="auto-refresh period in seconds (default 5)")
    parser.add_argument("--log-level", default="INFO")


def run(args) -> int:
    configure_logging(args.log_level)
    from anysentry.webui.client import normalize_api_url, read_admin_token
    from anysentry.webui.server import UiSettings, normalize_base_path, origins_from_env, run_forever, ui_port

    try:
        api_url = normalize_api_url(args.api_url)
        token = read_admin_token(args.admin_token_file)
        port = ui_port(args.port)
        base_path = normalize_base_path(args.public_base_path)
    except ValueError as exc:
        print(f"anysentry ui: {exc}", file=sys.stderr)
        return 2
    if not 0 <= port <= 65535 or not 0.5 <= args.refresh_secs <= 3600:
        print("anysentry ui: --port must be 0..65535 and --refresh-secs 0.5..3600", file=sys.stderr)
        return 2
    settings = UiSettings(api_url=api_url, port=port, host=args.host, admin_token=token,
                          allowed_origins=args.allow_websocket_origin or origins_from_env(),
                          refresh_secs=args.refresh_secs, base_path=base_path)
    try:
        run_forever(settings)
    except OSError as exc:
        print(f"anysentry ui: cannot listen on {args.host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
