"""The api side of cluster policy: every api replica follows the ConfigMap the operator writes.

The operator keeps the namespace's active policy (the merge of its valid `Policy` resources) in
ConfigMap `anysentry-policy` (`policy.json`, `policyVersion`; handlers_policy.py). Each replica
reads it every `interval` seconds (2 s: a change reaches every replica well within 5 s) with a
plain GET its Role allows (`get` on that one ConfigMap), and swaps its judge when the version moved.
A missing ConfigMap means no cluster policy: the defaults. A policy that does not compile (it never
should: the operator compiled it) is logged and the current one kept.

Wiring (in `anysentry api`, done by the lead):

    from anysentry.operator import policy_sync
    policy_sync.attach(services)   # no-op outside a cluster (ANYSENTRY_KUBE_NAMESPACE unset)

`attach` marks `services.policy` as locked (the cluster owns the policy; `PUT /config` should then
write the Policy resource through `mirror.write_policy`) and adds a startup hook that spawns the poll
loop on the services' task list."""

from __future__ import annotations

import asyncio
import json
import logging
import os

from anysentry.operator.kube import Kube, KubeError

log = logging.getLogger("anysentry.policy_sync")

CONFIGMAP = os.environ.get("ANYSENTRY_POLICY_CONFIGMAP", "anysentry-policy")
DEFAULT_INTERVAL = 2.0


class PolicySync:
    """Follows the policy ConfigMap of `namespace` onto a `PolicyState` (services.policy)."""

    def __init__(self, policy_state, kube, namespace: str, name: str = CONFIGMAP, interval: float = DEFAULT_INTERVAL):
        self.policy_state = policy_state
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.interval = interval
        self.applied_version: str | None = None  # the ConfigMap's version last applied ("" = defaults)
        self.errors = 0

    def read(self) -> dict | None:
        """(policy, version) data of the ConfigMap, or None when it does not exist."""
        config_map = self.kube.get("ConfigMap", self.namespace, self.name)
        return None if config_map is None else dict(config_map.get("data") or {})

    def apply(self, data: dict | None) -> bool:
        """Swap the judge when the ConfigMap's version differs from what is in force; True if swapped."""
        if data is None:
            version, policy = "", {}
        else:
            version = data.get("policyVersion", "")
            try:
                policy = json.loads(data.get("policy.json") or "{}")
            except ValueError as exc:
                log.error("policy ConfigMap %s/%s holds invalid JSON: %s", self.namespace, self.name, exc)
                return False
        if version == self.applied_version:
            return False
        try:
            self.policy_state.set(policy)
        except Exception as exc:  # PolicyError: keep the judge in force
            log.error("cluster policy %s rejected, keeping %s: %s", version, self.policy_state.version, exc)
            self.applied_version = version
            return False
        self.applied_version = version
        log.info("cluster policy %s applied (%d custom rules)", self.policy_state.version,
                 len(self.policy_state.policy.get("rules", [])))
        return True

    def poll_once(self) -> bool:
        return self.apply(self.read())

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.poll_once)
                self.errors = 0
            except asyncio.CancelledError:
                raise
            except (KubeError, OSError, Exception) as exc:  # API server away: keep the policy, retry
                self.errors += 1
                if self.errors in (1, 10) or self.errors % 100 == 0:
                    log.warning("policy ConfigMap %s/%s unreadable (%d): %s", self.namespace, self.name, self.errors, exc)
            await asyncio.sleep(self.interval)


def attach(services, namespace: str | None = None, kube=None, interval: float | None = None) -> PolicySync | None:
    """Follow the cluster policy when running in a cluster (ANYSENTRY_KUBE_NAMESPACE or `namespace`)."""
    namespace = namespace or os.environ.get("ANYSENTRY_KUBE_NAMESPACE", "")
    if not namespace:
        return None
    kube = kube or Kube.from_environment()
    sync = PolicySync(services.policy, kube, namespace,
                      interval=interval or float(os.environ.get("ANYSENTRY_POLICY_POLL_SECS", DEFAULT_INTERVAL)))
    services.policy.locked = True

    async def start(_services) -> None:
        try:
            await asyncio.to_thread(sync.poll_once)  # in force before the first event when reachable
        except Exception as exc:
            log.warning("cluster policy not read at start: %s", exc)
        _services.spawn(sync.run(), "policy-sync")

    services.startup_hooks.append(start)
    services.policy_sync = sync
    return sync
