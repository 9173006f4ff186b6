"""The one exception tree of kdisco.

    DiscoveryError
    ├── InvalidServiceName     (also ValueError)   bad name or port, raised before any I/O
    ├── ConfigurationError     (also ValueError)   bad setting or environment variable
    ├── ServiceNotFound                            every strategy that could tell says it is absent
    ├── NoReadyEndpoints                           it exists, nothing is ready
    ├── PortNotFound                               it exists, but not with the port asked for
    ├── NotReachable                               it exists, but nothing routes to it from
    │                                              outside the cluster (reach="external")
    ├── AccessDenied           (also PermissionError)   API 401/403, names the missing permission
    ├── DiscoveryTimeout       (also TimeoutError) the deadline passed before an answer
    └── DiscoveryUnavailable                       no strategy could give an answer (failures,
                                                   nothing applicable)

Errors raised by a discovery carry ``service`` (what was asked for) and ``attempts``
(each strategy tried, its outcome and why it gave no answer), and their message lists
the attempts too, so a log line alone says what happened.

``TransientError`` is not part of the tree users catch: strategies raise it to ask the
chain for a retry, and it only ever reaches users as the cause recorded in an attempt.
"""

from __future__ import annotations

from ._attempts import Attempt
from ._redact import redact
from ._service_ref import ServiceRef


class DiscoveryError(Exception):
    """Root of every error kdisco raises."""

    def __init__(
        self,
        message: str,
        *,
        service: ServiceRef | None = None,
        attempts: tuple[Attempt, ...] = (),
    ) -> None:
        # Every message is redacted here, once: see kdisco._redact.
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.service = service
        self.attempts = attempts

    def __str__(self) -> str:
        if not self.attempts:
            return self.message
        tried = "; ".join(a.describe() for a in self.attempts)
        return f"{self.message} (tried: {tried})"


class InvalidServiceName(DiscoveryError, ValueError):
    """The service name, namespace or port is malformed; raised before any network call."""


class ConfigurationError(DiscoveryError, ValueError):
    """A setting or environment variable kdisco reads is malformed."""


class ServiceNotFound(DiscoveryError):
    """No strategy that could tell found the Service."""


class NoReadyEndpoints(DiscoveryError):
    """The Service exists but has no ready endpoint."""


class PortNotFound(DiscoveryError):
    """The Service exists but declares no port with the name or number asked for."""


class NotReachable(DiscoveryError):
    """The Service exists, but nothing routes to it from outside the cluster: asked
    with ``reach="external"``, it has no load balancer address, external IP, node port
    or Ingress route."""


class AccessDenied(DiscoveryError, PermissionError):
    """The Kubernetes API refused the request (401 or 403).

    ``verb``, ``resource`` and ``namespace`` name the permission that was missing, so the
    fix (a Role rule) can be written from the message alone.
    """

    def __init__(
        self,
        message: str,
        *,
        verb: str = "",
        resource: str = "",
        namespace: str = "",
        status: int = 403,
        service: ServiceRef | None = None,
        attempts: tuple[Attempt, ...] = (),
    ) -> None:
        super().__init__(message, service=service, attempts=attempts)
        self.verb = verb
        self.resource = resource
        self.namespace = namespace
        self.status = status


class DiscoveryTimeout(DiscoveryError, TimeoutError):
    """The call's deadline passed before any strategy answered."""


class DiscoveryUnavailable(DiscoveryError):
    """No strategy could answer: each failed or did not apply here."""


class TransientError(Exception):
    """Raised by a strategy for a failure worth retrying (timeouts, SERVFAIL, 5xx, 429)."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
