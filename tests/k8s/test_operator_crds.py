"""The checked-in CRDs on a real API server: accepted, serving, and enforcing their schemas."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from .test_operator_helpers import ROOT, apply_crds

pytestmark = pytest.mark.k8s
EXAMPLES = sorted((ROOT / 'examples' / 'resources').glob('*.yaml'))
INVALID = sorted((ROOT / 'examples' / 'invalid').glob('*.yaml'))


def test_crds_are_accepted_and_established(k8s):
    apply_crds(k8s)
    out = k8s.kubectl('get', 'crd', '-o', 'name', check=True).stdout
    for plural in ('anysentries', 'sources', 'policies', 'objectives', 'maintenancewindows', 'notificationroutes'):
        assert f'customresourcedefinition.apiextensions.k8s.io/{plural}.anysentry.io' in out


@pytest.mark.parametrize('path', EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted(k8s, k8s_namespace, path: Path):
    apply_crds(k8s)
    out = k8s.kubectl('apply', '-n', k8s_namespace, '-f', str(path))
    assert out.returncode == 0, out.stderr
    assert 'created' in out.stdout


@pytest.mark.parametrize('path', INVALID, ids=lambda p: p.name)
def test_every_invalid_example_is_rejected_naming_the_field(k8s, k8s_namespace, path: Path):
    apply_crds(k8s)
    header = path.read_text().splitlines()[0]
    field = re.match(r'# invalid: ([^:]+):', header).group(1)
    leaf = re.sub(r'\[\d+\]', '', field).rsplit('.', 1)[-1]
    out = k8s.kubectl('apply', '-n', k8s_namespace, '-f', str(path))
    assert out.returncode != 0, f'{path.name} was accepted'
    assert leaf in out.stderr, (field, out.stderr)
