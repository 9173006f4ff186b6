"""``ServiceRef``: which Service a discovery is about (a leaf: imports nothing of kdisco)."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class ServiceRef:
    """Which Service: name, namespace and cluster domain.

    ``str(ref)`` is ``name.namespace``, as messages show it.

    Attributes:
        name: The Service's name.
        namespace: Its namespace.
        cluster_domain: The cluster's DNS domain. Default ``"cluster.local"``.

    Example:
        >>> ref = kdisco.ServiceRef(name="payments", namespace="billing")
        >>> str(ref), ref.fqdn
        ('payments.billing', 'payments.billing.svc.cluster.local.')
    """

    name: str
    namespace: str
    cluster_domain: str = "cluster.local"

    @property
    def fqdn(self) -> str:
        """The fully-qualified DNS name, with the trailing dot (no search-list walk)."""
        return f"{self.name}.{self.namespace}.svc.{self.cluster_domain}."

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"
