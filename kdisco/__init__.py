"""kdisco: find Kubernetes Services the way the cluster publishes them.

    >>> import kdisco
    >>> res = kdisco.discover("payments")                       # doctest: +SKIP
    >>> res = kdisco.discover("payments.billing", port="http")  # doctest: +SKIP

Cluster DNS first, then the kubelet's service variables, then the Kubernetes API;
typed endpoints; one error tree rooted at ``DiscoveryError``.

Start with ``help(kdisco.discover)`` (the names it takes, its arguments, what it
raises) and ``help(kdisco.Resolution)`` (what it returns); ``kdisco.Discoverer``
holds a configuration of your own, each argument backed by an environment variable
(``KDISCO_STRATEGIES``, ``KDISCO_NAMESPACE``, ``KDISCO_TIMEOUT``, ``KDISCO_REACH``...).
Elsewhere: ``kdisco.aio`` (asyncio), ``kdisco.testing`` (fakes for your tests, and
the pytest fixture ``kdisco_fake``), ``kdisco.httpx``, ``kdisco.requests`` and
``kdisco.grpc`` (clients that connect to Services by name), ``kdisco.Balancer``
(spreading requests over endpoints).

Errors::

    DiscoveryError
    ├── InvalidServiceName    (also ValueError)       bad name or port, before any I/O
    ├── ConfigurationError    (also ValueError)       bad setting or environment variable
    ├── ServiceNotFound                               no such Service
    ├── NoReadyEndpoints                              it exists, nothing is ready
    ├── PortNotFound                                  no such port on it
    ├── NotReachable                                  no way in from outside the cluster
    ├── AccessDenied          (also PermissionError)  the API refused: names the permission
    ├── DiscoveryTimeout      (also TimeoutError)     the deadline passed first
    └── DiscoveryUnavailable                          no strategy could answer here
"""

from typing import TYPE_CHECKING as _TYPE_CHECKING

from ._attempts import Attempt, Outcome
from ._deadline import Deadline
from ._discoverer import (
    Discoverer,
    discover,
    get_default_discoverer,
    reset_default_discoverer,
    watch,
)
from ._exceptions import (
    AccessDenied,
    ConfigurationError,
    DiscoveryError,
    DiscoveryTimeout,
    DiscoveryUnavailable,
    InvalidServiceName,
    NoReadyEndpoints,
    NotReachable,
    PortNotFound,
    ServiceNotFound,
    TransientError,
)
from ._models import Endpoint, Freshness, Resolution, ServiceKind, ServicePort
from ._names import Query
from ._notify import Notifier
from ._policies import CachePolicy, RetryPolicy, WatchCachePolicy
from ._service_ref import ServiceRef
from ._settings import Settings
from ._strategies.base import Miss, Strategy
from ._strategies.registry import StrategyFactory
from ._watch import Watch

if _TYPE_CHECKING:
    from ._balancer import Balancer, EndpointHealth, OutlierPolicy, Pick
    from ._pickers import (
        LeastResponseTime,
        Picker,
        PowerOfTwo,
        Random,
        RendezvousHash,
        RoundRobin,
    )

#: Loaded on first use: most processes never balance, and these cost ~30 ms to import.
_LAZY = {
    "Balancer": "._balancer",
    "EndpointHealth": "._balancer",
    "OutlierPolicy": "._balancer",
    "Pick": "._balancer",
    "LeastResponseTime": "._pickers",
    "Picker": "._pickers",
    "PowerOfTwo": "._pickers",
    "Random": "._pickers",
    "RendezvousHash": "._pickers",
    "RoundRobin": "._pickers",
}

__version__ = "0.1.0.dev0"

__all__ = [
    "AccessDenied",
    "Attempt",
    "Balancer",
    "CachePolicy",
    "ConfigurationError",
    "Deadline",
    "Discoverer",
    "DiscoveryError",
    "DiscoveryTimeout",
    "DiscoveryUnavailable",
    "Endpoint",
    "EndpointHealth",
    "Freshness",
    "InvalidServiceName",
    "LeastResponseTime",
    "Miss",
    "NoReadyEndpoints",
    "NotReachable",
    "Notifier",
    "Outcome",
    "OutlierPolicy",
    "Pick",
    "Picker",
    "PortNotFound",
    "PowerOfTwo",
    "Query",
    "Random",
    "RendezvousHash",
    "Resolution",
    "RetryPolicy",
    "RoundRobin",
    "ServiceKind",
    "ServiceNotFound",
    "ServicePort",
    "ServiceRef",
    "Settings",
    "Strategy",
    "StrategyFactory",
    "TransientError",
    "Watch",
    "WatchCachePolicy",
    "__version__",
    "discover",
    "get_default_discoverer",
    "reset_default_discoverer",
    "watch",
]

# Public classes live in private modules; present them as ``kdisco.X`` in tracebacks,
# reprs and docs, which is where users import them from (pickle finds them here too).
for _name in __all__:
    _obj = globals().get(_name)
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj


def __getattr__(name: str) -> object:
    where = _LAZY.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    obj: object = getattr(importlib.import_module(where, __name__), name)
    if isinstance(obj, type):
        obj.__module__ = __name__
    globals()[name] = obj
    return obj


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
