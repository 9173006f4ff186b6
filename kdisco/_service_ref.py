"""``ServiceRef``: which Service a discovery is about (a leaf: imports nothing of kdisco)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class ServiceRef:
    """Which Service: name, namespace and cluster domain."""

    name: str
    namespace: str
    cluster_domain: str = "cluster.local"

    @property
    def fqdn(self) -> str:
        """The fully-qualified DNS name, with the trailing dot (no search-list walk)."""
        return f"{self.name}.{self.namespace}.svc.{self.cluster_domain}."

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"
