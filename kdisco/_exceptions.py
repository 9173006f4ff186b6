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
(each strategy tried, its outcome and why it gave no answer). ``str(error)`` is the
headline (the most decisive finding), then every attempt on a line of its own, so a
log record alone says what happened.

``TransientError`` is not part of the tree users catch: strategies raise it to ask the
chain for a retry, and it only ever reaches users as the cause recorded in an attempt.
"""

from __future__ import annotations

from ._attempts import Attempt
from ._redact import redact
from ._service_ref import ServiceRef


class DiscoveryError(Exception):
    """Root of every error kdisco raises: catch it to handle any failed discovery.

    ``str(error)`` is the message (the headline: the most decisive finding), then
    ``tried:`` and every attempt on a line of its own (``dns: not found (...)``),
    so a log record alone says what happened (the CLI wraps them). Messages are
    redacted: credentials quoted by an underlying error never reach logs.

    Args:
        message: What went wrong (redacted as it is stored).
        service: The Service the discovery was about, when there was one.
        attempts: Each strategy's turn: its outcome and why it gave no answer.

    Attributes:
        message: The redacted message, without the attempts.
        service: The `ServiceRef` asked for, or None (a configuration error).
        attempts: The `Attempt` of each strategy tried, in order.

    Example:
        >>> try:  # doctest: +SKIP
        ...     res = kdisco.discover("db.storage:postgres", timeout=2.0)
        ... except kdisco.NoReadyEndpoints:
        ...     ...  # it exists, nothing is ready yet: back off
        ... except kdisco.DiscoveryError as exc:
        ...     log.error("no database: %s", exc)
    """

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
        # One line each (a log search or ``pytest.raises(match=...)`` sees a whole
        # line); the CLI wraps them to the terminal.
        tried = (f"    {a.describe()}" for a in self.attempts)
        return "\n".join((self.message, "  tried:", *tried))


class InvalidServiceName(DiscoveryError, ValueError):
    """The service name, namespace or port is malformed; raised before any network call.

    Raised by ``discover()`` and ``watch()`` when ``name`` is not ``svc``, ``svc.ns``,
    ``svc.ns.svc`` or ``svc.ns.svc.<cluster-domain>`` (with an optional ``:port``)
    made of valid DNS labels, when ``port`` is neither a number 1-65535 nor a port
    name, or when ``name`` and ``namespace=`` or ``port=`` disagree. Also a
    ``ValueError``.
    """


class ConfigurationError(DiscoveryError, ValueError):
    """A setting or environment variable kdisco reads is malformed.

    Raised when a `Discoverer` is built (a bad argument, ``KDISCO_*`` variable,
    static map, kubeconfig namespace or strategy name; the message names the setting
    and where its value came from), and by ``discover()`` for a bad ``timeout`` or
    ``reach``. Also a ``ValueError``.
    """


class ServiceNotFound(DiscoveryError):
    """No strategy that could tell found the Service.

    Raised when every strategy that answered said "not found" (DNS NXDOMAIN, API
    404, no static entry) and none failed or timed out, or when cluster DNS or the
    API said so and another strategy was only refused (`AccessDenied` then is not
    the finding: a typo is no missing Role rule): the Service does not exist (or
    not in that namespace; the message names the namespaces that have the name,
    when the API may list them). Never bridged with a stale answer.
    """


class NoReadyEndpoints(DiscoveryError):
    """The Service exists but has no ready endpoint.

    Raised when a headless Service (or, with ``backends=True``, any Service) has no
    ready pod, when the api strategy sees no ready or serving endpoint behind a
    ClusterIP (cluster DNS cannot see that, and answers the ClusterIP), when a
    static entry lists only endpoints with ``ready=False``, and by
    `Resolution.first` on an answer with no endpoints. Usually worth a backoff and a
    retry: pods may be starting. Never bridged with a stale answer.
    """


class PortNotFound(DiscoveryError):
    """The Service exists but declares no port with the name or number asked for.

    Also raised by `Resolution.url` when no port is known (DNS asked without a port
    name) and the scheme has no default port.
    """


class NotReachable(DiscoveryError):
    """The Service exists, but nothing routes to it from outside the cluster: asked
    with ``reach="external"``, it has no load balancer address, external IP, node port
    or Ingress route."""


def permission_words(verb: str, resource: str, namespace: str) -> str:
    """A permission in words: ``'get' on 'services' in namespace 'billing'``, or
    ``'list' on 'nodes' cluster-wide`` for a cluster-scoped resource (``namespace``
    ``""``). ``resource`` is qualified by its group (``endpointslices.discovery.k8s.io``)."""
    where = f"in namespace {namespace!r}" if namespace else "cluster-wide"
    return f"{verb!r} on {resource!r} {where}"


def rbac_rule(verb: str, resource: str) -> str:
    """The RBAC rule that grants ``verb`` on ``resource`` (qualified by its group):
    ``apiGroups ['discovery.k8s.io'], resources ['endpointslices'], verbs ['list']``."""
    plain, _, group = resource.partition(".")
    return f"apiGroups [{group!r}], resources [{plain!r}], verbs [{verb!r}]"


#: Where an `AccessDenied` message quotes the API's own words (after the permission
#: and the rule that grants it): error headlines stop there.
API_SAID = "; the API said: "


class AccessDenied(DiscoveryError, PermissionError):
    """The Kubernetes API refused the request (401 or 403).

    ``verb``, ``resource`` and ``namespace`` name the permission that was missing, so the
    fix (a Role rule) can be written from the message alone. Raised when the api
    strategy was refused and no other strategy answered. Also a ``PermissionError``.

    Args:
        message: What was refused (redacted as it is stored).
        verb: The verb refused (``"get"``, ``"list"``, ``"watch"``).
        resource: The resource (``"services"``, ``"endpointslices"``,
            ``"ingresses"``, ``"nodes"``).
        namespace: Its namespace; ``""`` for a cluster-scoped resource (nodes).
        status: The HTTP status: 401 (not authenticated) or 403 (not allowed).
            Default 403.
        service: The Service the discovery was about.
        attempts: Each strategy's turn, as for `DiscoveryError`.

    Attributes:
        verb: The verb refused.
        resource: The resource it was refused on.
        namespace: The namespace, ``""`` for a cluster-scoped resource.
        status: 401 or 403.
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

    @property
    def permission(self) -> str:
        """The refusal in a few words, as error headlines give it.

        For example ``needs 'get' on 'services' in namespace 'billing'``, or the
        credentials rejected, for a 401.

        Returns:
            str: One line; the message when the permission is not known.
        """
        if self.status == 401:
            return "the API rejected the credentials (401 Unauthorized)"
        if not self.verb or not self.resource:
            return self.message
        return f"needs {permission_words(self.verb, self.resource, self.namespace)}"


class DiscoveryTimeout(DiscoveryError, TimeoutError):
    """The call's deadline passed before any strategy answered.

    Raised when a strategy ran out of its share of the deadline (a dead DNS server,
    a slow API) and no other answered. A cached answer, if any, is served ``stale``
    instead, within ``CachePolicy.max_stale``. Also a ``TimeoutError``.
    """


class DiscoveryUnavailable(DiscoveryError):
    """No strategy could answer: each failed or did not apply here.

    Raised when, say, the process runs outside a cluster with no kubeconfig (dns,
    env and api do not apply), a strategy's server failed with no other to answer,
    no strategies are configured, or ExternalName aliases loop. A cached answer, if
    any, is served ``stale`` instead, within ``CachePolicy.max_stale``.
    """


class TransientError(Exception):
    """Raised by a strategy for a failure worth retrying (timeouts, SERVFAIL, 5xx, 429).

    Not a `DiscoveryError`, and never raised to users: the chain retries the
    strategy (see `RetryPolicy`) while its share of the deadline lasts, then records
    the failure in an `Attempt` and moves on.

    Args:
        message: What failed (redacted as it is stored).
    """

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))
