"""pytest fixtures for the simulated cluster (exposed by nodepool/tests/conftest.py).

``k8s_sim`` is a started Kubernetes simulator and ``openshift_sim`` an
OpenShift one, each with its kubeconfig written to the test's tmp_path
(``sim.kubeconfig_path``, context ``sim-context``).  Both stop when the
test ends.  Pass the path and context to the code under test explicitly:
the kubernetes client reads ``$KUBECONFIG`` once, at import time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from nodepool.tests.k8s_sim.cluster import SimulatedKubernetes

# The simulator (and with it the kubernetes client's models) is imported
# when a test asks for it, so the conftest import stays cheap for the rest.


@pytest.fixture
def k8s_sim(tmp_path: Path) -> Iterator[SimulatedKubernetes]:
    from nodepool.tests.k8s_sim.cluster import SimulatedKubernetes
    with SimulatedKubernetes("sim") as sim:
        sim.write_kubeconfig(tmp_path / "kubeconfig")
        yield sim


@pytest.fixture
def openshift_sim(tmp_path: Path) -> Iterator[SimulatedKubernetes]:
    from nodepool.tests.k8s_sim.cluster import SimulatedKubernetes
    with SimulatedKubernetes("sim", openshift=True) as sim:
        sim.write_kubeconfig(tmp_path / "kubeconfig-openshift")
        yield sim
