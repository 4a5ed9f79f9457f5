"""`pods.attach` (SPEC §7.6): nothing outside a cluster, a clear refusal of a bad agent selector."""

import pytest

from anysentry.operator import pods


def test_attach_is_off_outside_a_cluster_and_rejects_a_bad_selector():
    assert pods.attach(object(), environ={}) is None
    assert pods.attach(object(), environ={"ANYSENTRY_KUBE_NAMESPACE": "x", "ANYSENTRY_KUBE_ENRICH": "off"}) is None
    with pytest.raises(SystemExit, match="ANYSENTRY_AGENT_LABEL_SELECTOR: invalid label selector requirement 'a in b'"):
        pods.attach(object(), environ={"ANYSENTRY_KUBE_NAMESPACE": "x", "ANYSENTRY_AGENT_LABEL_SELECTOR": "a in b"})
