"""``Discoverer``: a configured chain of strategies, and the module-level ``discover()``."""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from ._api import ApiStrategy
from ._cache import AnswerCache, CachePolicy
from ._chain import RetryPolicy, Sleep, run_sync
from ._config import (
    DEFAULT_CLUSTER_DOMAIN,
    DEFAULT_RESOLV_CONF,
    DEFAULT_TIMEOUT,
    STRATEGY_NAMES,
    ResolvConf,
    checked_cluster_domain,
    detect_namespace,
    parse_dns_server,
    parse_strategy_list,
    parse_timeout,
    pod_namespace,
)
from ._config import (
    serviceaccount_dir as resolve_serviceaccount_dir,
)
from ._deadline import Clock, Deadline
from ._dns import DnsStrategy, DnsTarget
from ._env import EnvStrategy
from ._exceptions import ConfigurationError, DiscoveryError
from ._models import Resolution
from ._names import check_namespace, parse_query
from ._static import StaticEntry, StaticStrategy
from ._strategy import Strategy
from ._watch import Callback, ErrorCallback, Watch
from ._watchcache import WatchCachePolicy


class Discoverer:
    """Finds Services by trying strategies in order under one deadline per call.

    Every argument left as None falls back to its environment variable
    (``KDISCO_STRATEGIES``, ``KDISCO_NAMESPACE``, ``KDISCO_DNS_SERVER``,
    ``KDISCO_CLUSTER_DOMAIN``, ``KDISCO_TIMEOUT``, ``KDISCO_STATIC``,
    ``KDISCO_SERVICEACCOUNT_DIR``, ``KUBECONFIG``), then to auto-detection.
    Configuration errors are raised here, before any network call.
    """

    def __init__(
        self,
        *,
        strategies: Sequence[str | Strategy] | None = None,
        namespace: str | None = None,
        dns_server: str | None = None,
        cluster_domain: str | None = None,
        timeout: float | None = None,
        static: Mapping[str, StaticEntry] | str | os.PathLike[str] | None = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        serviceaccount_dir: str | os.PathLike[str] | None = None,
        resolv_conf: str | os.PathLike[str] = DEFAULT_RESOLV_CONF,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        retry: RetryPolicy | None = None,
        cache: CachePolicy | bool = True,
        api_watch: WatchCachePolicy | bool = True,
    ) -> None:
        env = dict(os.environ if environ is None else environ)
        self._environ = env
        self._clock = clock
        self._retry = retry if retry is not None else RetryPolicy(sleep=sleep)
        if isinstance(cache, bool):
            cache = CachePolicy(enabled=cache)
        elif not isinstance(cache, CachePolicy):
            raise ConfigurationError(f"cache must be a bool or a CachePolicy, not {cache!r}")
        self._cache = AnswerCache(cache, clock)
        if isinstance(api_watch, bool):
            api_watch = WatchCachePolicy(enabled=api_watch)
        elif not isinstance(api_watch, WatchCachePolicy):
            raise ConfigurationError(
                f"api_watch must be a bool or a WatchCachePolicy, not {api_watch!r}"
            )
        self._api_watch = api_watch
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()
        self._watches_lock = threading.Lock()
        # The argument shadows the helper's name, hence the alias.
        sa_dir = resolve_serviceaccount_dir(env, serviceaccount_dir)
        kubeconfig = kubeconfig or env.get("KUBECONFIG") or None

        if namespace is not None:
            self._namespace, self._namespace_source = check_namespace(namespace), "argument"
        else:
            self._namespace, self._namespace_source = detect_namespace(
                env, sa_dir, kubeconfig, context
            )

        resolv = ResolvConf.read(Path(resolv_conf))
        if cluster_domain is not None:
            domain = checked_cluster_domain(cluster_domain, "cluster_domain")
        elif env.get("KDISCO_CLUSTER_DOMAIN"):
            domain = checked_cluster_domain(env["KDISCO_CLUSTER_DOMAIN"], "KDISCO_CLUSTER_DOMAIN")
        else:
            domain = resolv.cluster_domain() or DEFAULT_CLUSTER_DOMAIN
        self._cluster_domain = domain

        if timeout is not None:
            self._timeout = parse_timeout(timeout)
        elif env.get("KDISCO_TIMEOUT"):
            self._timeout = parse_timeout(env["KDISCO_TIMEOUT"], where="KDISCO_TIMEOUT")
        else:
            self._timeout = DEFAULT_TIMEOUT

        if static is None and env.get("KDISCO_STATIC"):
            static = env["KDISCO_STATIC"]
        static_strategy: StaticStrategy | None = None
        if isinstance(static, Mapping):
            static_strategy = StaticStrategy(static)
        elif static is not None:
            static_strategy = StaticStrategy.from_file(static)

        if strategies is None:
            if env.get("KDISCO_STRATEGIES"):
                strategies = parse_strategy_list(env["KDISCO_STRATEGIES"])
            else:
                # A static map, when configured, answers first: that is its point.
                strategies = (["static"] if static_strategy else []) + ["dns", "env", "api"]
        if isinstance(strategies, str):
            raise ConfigurationError("strategies must be a list such as ['dns', 'api'], not a str")

        built: list[Strategy] = []
        for item in strategies:
            if isinstance(item, str):
                built.append(
                    self._builtin(
                        item, static_strategy, dns_server, resolv, sa_dir, kubeconfig, context
                    )
                )
            elif isinstance(item, Strategy):
                built.append(item)
            else:
                raise ConfigurationError(
                    f"strategy {item!r} is neither a name ({', '.join(STRATEGY_NAMES)}) "
                    "nor an object with .name and .lookup(query, deadline)"
                )
        names = [s.name for s in built]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"strategies named twice: {names}")
        self._strategies = tuple(built)

    def _builtin(
        self,
        name: str,
        static: StaticStrategy | None,
        dns_server: str | None,
        resolv: ResolvConf,
        sa_dir: Path,
        kubeconfig: str | None,
        context: str | None,
    ) -> Strategy:
        env = self._environ
        key = name.strip().lower()
        if key == "static":
            if static is None:
                raise ConfigurationError(
                    "strategy 'static' needs a map: pass static= or set KDISCO_STATIC"
                )
            return static
        if key == "dns":
            return _dns_strategy(dns_server, env, resolv)
        if key == "env":
            # Without POD_NAMESPACE or a service-account file the pod's namespace is
            # unknown; the Discoverer's namespace is then the best guess there is.
            return EnvStrategy(env, namespace=pod_namespace(env, sa_dir) or self._namespace)
        if key == "api":
            return ApiStrategy(
                kubeconfig=kubeconfig,
                context=context,
                serviceaccount_dir=sa_dir,
                environ=env,
                watch=self._api_watch,
                clock=self._clock,
            )
        raise ConfigurationError(f"unknown strategy {name!r} (known: {', '.join(STRATEGY_NAMES)})")

    # -- public ----------------------------------------------------------------

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def cluster_domain(self) -> str:
        return self._cluster_domain

    @property
    def timeout(self) -> float:
        return self._timeout

    @property
    def strategies(self) -> tuple[Strategy, ...]:
        return self._strategies

    @property
    def cache_policy(self) -> CachePolicy:
        return self._cache.policy

    @property
    def clock(self) -> Clock:
        return self._clock

    def __repr__(self) -> str:
        names = ", ".join(s.name for s in self._strategies)
        return (
            f"Discoverer(strategies=[{names}], namespace={self._namespace!r} "
            f"({self._namespace_source}), cluster_domain={self._cluster_domain!r})"
        )

    def discover(
        self,
        name: str,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        timeout: float | None = None,
        include_not_ready: bool = False,
    ) -> Resolution:
        """Find the Service ``name`` (``svc``, ``svc.ns``, ``svc.ns.svc.<domain>``, ``:port``).

        Raises ``InvalidServiceName`` before any network call when the input is bad, and
        otherwise a ``DiscoveryError`` subclass that lists each strategy tried and why.
        Answers are cached (see ``CachePolicy``); a cached answer returns at once.
        """
        # Types are part of the key: True == 1, but port=True is invalid and port=1 is not.
        key = (name, namespace, port, type(port), include_not_ready, type(include_not_ready))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        query = parse_query(
            name,
            namespace=namespace,
            default_namespace=self._namespace,
            cluster_domain=self._cluster_domain,
            port=port,
            include_not_ready=include_not_ready,
        )
        seconds = self._timeout if timeout is None else parse_timeout(timeout)
        deadline = Deadline(seconds, clock=self._clock)
        try:
            res = run_sync(self._strategies, query, deadline, self._retry)
        except DiscoveryError as exc:
            return self._cache.stale_or_raise(key, exc)
        self._cache.put(key, res)
        return res

    def watch(
        self,
        name: str,
        *,
        namespace: str | None = None,
        port: int | str | None = None,
        timeout: float | None = None,
        include_not_ready: bool = False,
        callback: Callback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Watch:
        """Follow a Service: a new ``Resolution`` each time its endpoints change.

        Iterate over the returned ``Watch`` (in this thread), or pass ``callback`` to have
        it called from a background thread. ``stop()``, a ``with`` block or ``close()``
        ends it. See ``kdisco.Watch`` for when it re-asks.
        """
        w = Watch(
            self,
            name,
            namespace=namespace,
            port=port,
            include_not_ready=include_not_ready,
            timeout=timeout,
            callback=callback,
            on_error=on_error,
        )
        with self._watches_lock:
            self._watches.add(w)
        return w

    def clear_cache(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    def close(self) -> None:
        """Stop every watch and watch thread, and release connections the strategies hold."""
        with self._watches_lock:
            watches = list(self._watches)
        for w in watches:
            w.stop()
        for strategy in self._strategies:
            close = getattr(strategy, "close", None)
            if callable(close):
                close()

    def __enter__(self) -> Discoverer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _dns_strategy(
    dns_server: str | None, env: Mapping[str, str], resolv: ResolvConf
) -> DnsStrategy:
    if dns_server is not None:
        return DnsStrategy([parse_dns_server(dns_server, where="dns_server")])
    if env.get("KDISCO_DNS_SERVER"):
        return DnsStrategy([parse_dns_server(part) for part in env["KDISCO_DNS_SERVER"].split(",")])
    if resolv.cluster_domain() is None:
        # Outside a cluster, asking public DNS for *.svc.cluster.local only wastes the
        # caller's deadline (and leaks the name); say so at once instead.
        return DnsStrategy(
            not_applicable="not in a cluster: no '<ns>.svc.<zone>' search domain in "
            "resolv.conf and KDISCO_DNS_SERVER unset"
        )
    targets: list[DnsTarget] = []
    for ns in resolv.nameservers:
        try:
            targets.append(parse_dns_server(ns, where="resolv.conf nameserver"))
        except ConfigurationError:
            continue  # e.g. a scoped IPv6 literal; other nameservers may still work
    if not targets:
        return DnsStrategy(not_applicable="resolv.conf lists no usable nameserver")
    return DnsStrategy(targets)


# -- the module-level convenience ------------------------------------------------------

_lock = threading.Lock()
_default: Discoverer | None = None
_overrides: list[Discoverer] = []


def get_default_discoverer() -> Discoverer:
    """The Discoverer ``kdisco.discover()`` uses, built from the environment on first use."""
    global _default
    default = _default
    if default is not None and not _overrides:
        return default  # the hot path of kdisco.discover(): no lock once built
    with _lock:
        if _overrides:
            return _overrides[-1]
        if _default is None:
            _default = Discoverer()
        return _default


def reset_default_discoverer() -> None:
    """Forget the default Discoverer (e.g. after changing environment variables)."""
    global _default
    with _lock:
        old, _default = _default, None
    if old is not None:
        old.close()


@contextmanager
def use_discoverer(discoverer: Discoverer) -> Iterator[Discoverer]:
    """Make ``kdisco.discover()`` use ``discoverer`` inside the ``with`` block."""
    with _lock:
        _overrides.append(discoverer)
    try:
        yield discoverer
    finally:
        with _lock:
            _overrides.remove(discoverer)


def discover(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
) -> Resolution:
    """Find a Service with the default Discoverer (see ``Discoverer.discover``)."""
    return get_default_discoverer().discover(
        name,
        namespace=namespace,
        port=port,
        timeout=timeout,
        include_not_ready=include_not_ready,
    )


def watch(
    name: str,
    *,
    namespace: str | None = None,
    port: int | str | None = None,
    timeout: float | None = None,
    include_not_ready: bool = False,
    callback: Callback | None = None,
    on_error: ErrorCallback | None = None,
) -> Watch:
    """Follow a Service with the default Discoverer (see ``Discoverer.watch``)."""
    return get_default_discoverer().watch(
        name,
        namespace=namespace,
        port=port,
        timeout=timeout,
        include_not_ready=include_not_ready,
        callback=callback,
        on_error=on_error,
    )
