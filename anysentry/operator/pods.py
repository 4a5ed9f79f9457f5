"""Keeps the api's pod index (`anysentry.events.workloads.WorkloadIndex`) current, SPEC §7.6.

`PodWatcher` lists the watched namespaces' pods (all of them for `*`: one cluster-wide list) and then
follows a watch from the list's `resourceVersion`, resuming from the last version seen when a watch
ends and re-listing when the version has expired (410) or the stream failed. It runs in daemon
threads, one per namespace (or one for every namespace): a slow or unreachable API server never
touches the event loop, and a watch error is logged and retried with backoff — ingest simply goes on
unenriched meanwhile.

Wiring (in `anysentry api`): `pods.attach(services)` — a no-op outside a cluster
(`ANYSENTRY_KUBE_NAMESPACE` unset) or with `ANYSENTRY_KUBE_ENRICH=off`. The api ServiceAccount needs
`get`, `list`, `watch` on `pods` (core group): a ClusterRole when the namespaces are `*`, else a
Role in each listed namespace."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from typing import Iterator
from urllib.parse import urlencode

import orjson

from anysentry.events.workloads import EnrichSettings, WorkloadIndex
from anysentry.operator.kube import Kube, KubeError, path

log = logging.getLogger("anysentry.pods")

GONE = 410
READY_WAIT_SECS = 5.0


class WatchExpired(Exception):
    """The watch's resourceVersion is too old: list again."""


class PodWatcher:
    def __init__(self, index: WorkloadIndex, kube, namespaces: tuple[str, ...] | None = None, *,
                 watch_timeout: int = 300, page_size: int = 500, max_backoff: float = 30.0):
        self.index = index
        self.kube = kube
        self.scopes: tuple[str | None, ...] = tuple(namespaces) if namespaces else (None,)
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.max_backoff = max_backoff
        self.ready = threading.Event()  # every scope listed once
        self.errors = 0
        self.listings = 0  # a watch that ends is resumed from its resourceVersion, not listed again
        self.watches = 0
        self._listed: set[str | None] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._responses: set = set()
        self._lock = threading.Lock()

    # ---- one scope ---------------------------------------------------------------------------
    def list_pods(self, namespace: str | None) -> str:
        """List into the index, page by page (a large cluster's pods are never all in memory at once);
        the list's resourceVersion, where the watch starts."""
        listed = {"resourceVersion": ""}

        def pages() -> Iterator[dict]:
            token = None
            while True:
                page = self.kube.request("GET", path("Pod", namespace), query={"limit": self.page_size, "continue": token}) or {}
                yield from (p for p in page.get("items") or [] if isinstance(p, dict))
                meta = page.get("metadata") or {}
                listed["resourceVersion"], token = str(meta.get("resourceVersion") or ""), meta.get("continue")
                if not token:
                    return

        self.index.replace(pages(), namespace)
        self.listings += 1
        with self._lock:
            self._listed.add(namespace)
            if len(self._listed) == len(self.scopes):
                self.ready.set()
        return listed["resourceVersion"]

    def _events(self, namespace: str | None, resource_version: str) -> Iterator[dict]:
        """The raw watch events (dicts) from `resource_version` until the server ends the watch."""
        query = {"watch": "true", "allowWatchBookmarks": "true", "timeoutSeconds": self.watch_timeout}
        if resource_version:
            query["resourceVersion"] = resource_version
        api = self.kube.api
        method, url, headers, _, _ = api.param_serialize(
            method="GET", resource_path=path("Pod", namespace) + "?" + urlencode(query),
            header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
        response = api.call_api(method, url, header_params=headers, _request_timeout=(10, self.watch_timeout + 30))
        self.watches += 1
        raw = response.response
        with self._lock:
            self._responses.add(raw)
        try:
            if response.status == GONE:
                raise WatchExpired(response.reason or "")
            if response.status >= 400:
                raise KubeError(response.status, response.reason or "", raw.data.decode("utf-8", "replace")[:300])
            from kubernetes.watch.watch import iter_resp_lines

            for line in iter_resp_lines(raw):
                if line.strip():
                    event = orjson.loads(line)
                    if isinstance(event, dict):
                        yield event
        finally:
            with self._lock:
                self._responses.discard(raw)
            raw.release_conn()

    def follow(self, namespace: str | None, resource_version: str) -> str:
        """Apply watch events to the index until the watch ends; the last resourceVersion seen."""
        for event in self._events(namespace, resource_version):
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, dict):
                continue
            if kind == "ERROR":
                if obj.get("code") == GONE:
                    raise WatchExpired(obj.get("message", ""))
                raise KubeError(int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", ""))
            meta = obj.get("metadata") or {}
            resource_version = str(meta.get("resourceVersion") or resource_version)
            if kind in ("ADDED", "MODIFIED"):
                self.index.upsert(obj)
            elif kind == "DELETED":
                self.index.remove(str(meta.get("uid") or ""))
        return resource_version

    def _run_scope(self, namespace: str | None) -> None:
        failures, resource_version = 0, ""
        where = namespace or "all namespaces"
        while not self._stop.is_set():
            try:
                if not resource_version:
                    resource_version = self.list_pods(namespace)
                resource_version = self.follow(namespace, resource_version)
                failures = 0
            except WatchExpired:
                resource_version = ""  # re-list at once: nothing failed
            except Exception as exc:  # API server restarting, RBAC, network: back off and re-list
                if self._stop.is_set():
                    return
                failures += 1
                self.errors += 1
                resource_version = ""
                if failures == 1 or failures % 10 == 0:
                    log.warning("pod watch in %s failed (%d in a row), retrying: %s", where, failures, exc)
                self._stop.wait(min(self.max_backoff, 0.5 * 2 ** min(failures - 1, 6)))

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "PodWatcher":
        self._stop.clear()
        for scope in self.scopes:
            thread = threading.Thread(target=self._run_scope, args=(scope,), daemon=True,
                                      name=f"pod-watch-{scope or 'all'}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the watches (open streams are closed, so the threads leave their reads)."""
        self._stop.set()
        with self._lock:
            responses = list(self._responses)
        for response in responses:
            try:
                response.shutdown()  # interrupts a read blocked in another thread
            except Exception as exc:
                log.debug("closing a pod watch: %s", exc)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    async def run(self) -> None:
        """Watch until cancelled."""
        self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.to_thread(self.stop)


def attach(services, *, kube=None, environ=os.environ) -> PodWatcher | None:
    """Enrich observer events with pod identity when running in a cluster (and not switched off)."""
    if not environ.get("ANYSENTRY_KUBE_NAMESPACE", "").strip():
        return None
    try:
        settings = EnrichSettings.from_env(environ)
    except ValueError as exc:
        raise SystemExit(f"anysentry api: {exc}") from None
    if not settings.enabled:
        return None
    index = WorkloadIndex.from_settings(settings)
    watcher = PodWatcher(index, kube or Kube.from_environment(), settings.namespaces)
    services.pipeline.workloads = index

    async def start(_services) -> None:
        _services.spawn(watcher.run(), "pod-identity")
        # the first events are enriched when the API server answers at once; never wait long for it
        await asyncio.to_thread(watcher.ready.wait, READY_WAIT_SECS)

    services.startup_hooks.append(start)
    return watcher
