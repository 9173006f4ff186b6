"""kdisco lab: a real etcd + kube-apiserver + CoreDNS on 127.0.0.1 for integration tests.

Binaries are built from source by ``python lab/build.py`` into
``~/.cache/kdisco-lab`` (``$KDISCO_LAB_CACHE``).  ``python -m lab up|down|status``
manages a detached lab in ``.lab/``; tests use :func:`ensure_lab`.
Needs the ``cryptography`` package to start a lab (not to build).
"""

from lab._runner import (
    CLUSTER_DOMAIN,
    SERVICE_CIDR_V4,
    SERVICE_CIDR_V6,
    Lab,
    LabError,
    LabInfo,
    dns_probe,
    ensure_lab,
    find_running_lab,
    free_port,
    state_dir,
)
from lab.versions import VERSIONS

__all__ = [
    "CLUSTER_DOMAIN",
    "SERVICE_CIDR_V4",
    "SERVICE_CIDR_V6",
    "VERSIONS",
    "Lab",
    "LabError",
    "LabInfo",
    "dns_probe",
    "ensure_lab",
    "find_running_lab",
    "free_port",
    "state_dir",
]
