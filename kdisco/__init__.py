"""kdisco: find Kubernetes Services the way the cluster publishes them.

    >>> import kdisco
    >>> res = kdisco.discover("payments")                       # doctest: +SKIP
    >>> res = kdisco.discover("payments.billing", port="http")  # doctest: +SKIP

Cluster DNS first, then the kubelet's service variables, then the Kubernetes API;
typed endpoints; one error tree rooted at ``DiscoveryError``.
"""

from ._cache import CachePolicy
from ._chain import RetryPolicy
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
    PortNotFound,
    ServiceNotFound,
    TransientError,
)
from ._models import Attempt, Endpoint, Outcome, Resolution, ServiceKind, ServicePort, ServiceRef
from ._names import Query
from ._strategy import Miss, Strategy
from ._watch import Watch
from ._watchcache import WatchCachePolicy

__version__ = "0.1.0.dev0"

__all__ = [
    "AccessDenied",
    "Attempt",
    "CachePolicy",
    "ConfigurationError",
    "Deadline",
    "Discoverer",
    "DiscoveryError",
    "DiscoveryTimeout",
    "DiscoveryUnavailable",
    "Endpoint",
    "InvalidServiceName",
    "Miss",
    "NoReadyEndpoints",
    "Outcome",
    "PortNotFound",
    "Query",
    "Resolution",
    "RetryPolicy",
    "ServiceKind",
    "ServiceNotFound",
    "ServicePort",
    "ServiceRef",
    "Strategy",
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
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
