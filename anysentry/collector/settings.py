"""The collector's configuration (flags over the environment the DaemonSet sets) and its ingest
token, which the operator may issue after the collector started: the token file is re-read whenever
it changes (Kubernetes swaps a Secret volume's files in place) and after the api rejects a token."""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from anysentry.api.limits import BATCH_LIMIT
from anysentry.collector.observer import DEFAULT_AGENT_PATTERN

API_BASE_PATH = "/security-center"
DEFAULT_INGEST_URL = f"http://127.0.0.1:29653{API_BASE_PATH}"


class SettingsError(ValueError):
    """A setting the collector cannot run with; the message says which and why."""


def api_base(url: str) -> str:
    """The api base URL ending in /security-center, from a base, a host URL or an /ingest URL."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"ingest URL {url!r} is not an http(s) URL (e.g. {DEFAULT_INGEST_URL})")
    url = re.sub(r"/ingest(/batch)?$", "", url)
    return url if url.endswith(API_BASE_PATH) else url + API_BASE_PATH


@dataclass(frozen=True)
class CollectorSettings:
    """The defaults here are the collector's only ones: `anysentry collect` passes what flags and
    environment give, and its --help quotes these."""

    ingest_url: str = DEFAULT_INGEST_URL
    source_id: str = ""
    source_type: str = "observer"
    source_name: str = ""
    token_file: str = ""
    token_env: str = ""  # ANYSENTRY_INGEST_TOKEN, for runs outside Kubernetes
    collector_id: str = field(default_factory=socket.gethostname)
    node_name: str = field(default_factory=socket.gethostname)
    namespace: str = ""
    pod_name: str = ""
    mode: str = "observe"
    procfs: bool = True
    host_proc: str = "/proc"
    interval: float = 1.0
    all_processes: bool = False
    agent_pattern: str = DEFAULT_AGENT_PATTERN
    ndjson: tuple[str, ...] = ()
    falco: tuple[str, ...] = ()
    tetragon: tuple[str, ...] = ()
    buffer_dir: str = "/var/lib/anysentry/collector"
    buffer_max_bytes: int = 256 * 1024 * 1024
    batch_size: int = BATCH_LIMIT
    flush_interval: float = 0.25
    heartbeat_interval: float = 30.0
    health: bool = True
    health_host: str = "0.0.0.0"
    health_port: int = 29654  # 0 picks a free port
    degraded_after: float = 120.0
    request_timeout: float = 30.0
    max_backoff: float = 60.0

    def __post_init__(self) -> None:
        if self.mode != "observe":
            raise SettingsError(f"mode {self.mode!r} is not supported: the collector only observes "
                                "(enforcement goes through the runtime guard)")
        try:
            re.compile(self.agent_pattern)
        except re.error as exc:
            raise SettingsError(f"agent pattern {self.agent_pattern!r} is not a valid regular expression: {exc}") from None
        object.__setattr__(self, "ingest_url", api_base(self.ingest_url))
        for name, low in (("interval", 0.05), ("flush_interval", 0.01), ("heartbeat_interval", 0.1),
                          ("degraded_after", 0.1), ("request_timeout", 0.1), ("max_backoff", 0.1)):
            if not getattr(self, name) >= low:
                raise SettingsError(f"{name.replace('_', '-')} must be at least {low} seconds")
        if not 1 <= self.batch_size <= BATCH_LIMIT:
            raise SettingsError(f"batch size must be between 1 and {BATCH_LIMIT}")
        if self.buffer_max_bytes < 1024 * 1024:
            raise SettingsError("the buffer must be at least 1 MiB")
        if not 0 <= self.health_port <= 65535:
            raise SettingsError("health port must be between 0 (any free port) and 65535")
        if [*self.ndjson, *self.falco, *self.tetragon].count("-") > 1:
            raise SettingsError("standard input ('-') can feed only one of --ndjson, --falco, --tetragon")
        if not self.procfs and not (self.ndjson or self.falco or self.tetragon):
            raise SettingsError("nothing to collect: the procfs observer is off and no --ndjson/--falco/--tetragon input is given")

    @property
    def inputs(self) -> list[tuple[str, str]]:
        """(route, path) of every followed input."""
        return ([("batch", p) for p in self.ndjson] + [("falco", p) for p in self.falco]
                + [("tetragon", p) for p in self.tetragon])

    @property
    def features(self) -> list[str]:
        out = ["procfs", "exec", "exit", "egress"] if self.procfs else []
        out += [name for name, given in (("ndjson", self.ndjson), ("falco", self.falco), ("tetragon", self.tetragon)) if given]
        return out + ["disk-buffer"]


class TokenSource:
    """The ingest token: the token file when it has content, else the environment. Never logged."""

    def __init__(self, path: str = "", fallback: str = ""):
        self.path = path
        self.fallback = fallback.strip()
        self._seen: tuple | None = None
        self._token = ""

    def current(self) -> str:
        if self.path:
            try:
                st = os.stat(self.path)
                seen = (st.st_ino, st.st_mtime_ns, st.st_size)
            except OSError:
                seen = None
            if seen != self._seen:
                self._seen = seen
                try:
                    with open(self.path, encoding="utf-8") as handle:
                        self._token = handle.read(4096).strip()
                except (OSError, UnicodeDecodeError):
                    self._token = ""
        return self._token or self.fallback

    def reload(self) -> None:
        """Read the file again on next use (after the api rejected the token we hold)."""
        self._seen = None
