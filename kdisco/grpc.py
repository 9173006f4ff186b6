"""gRPC clients spread over a Service's pods (``pip install kdisco[grpc]``).

A ClusterIP pins a gRPC channel (one long-lived HTTP/2 connection) to the one pod
kube-proxy chose when it connected: every call goes there. Balancing needs the pods'
addresses, and grpcio balances over an address list itself::

    target = kdisco.grpc.target("payments.billing", port="grpc", backends=True)
    channel = grpc.insecure_channel(target, options=kdisco.grpc.ROUND_ROBIN)

``target`` is a snapshot. ``ServiceChannel`` follows the Service instead: when the
pod set changes it makes a new channel and sends new calls there, while calls
already running finish on the old one (closed after ``grace`` seconds). The pods
behind a ClusterIP Service come with ``backends=True`` (the api strategy lists them);
a headless Service's answer is its pods already. See docs/grpc.md.
"""

from __future__ import annotations

import collections.abc as _abc
import socket as _socket
import threading as _threading
import typing as _typing

import grpc as _grpc

from . import _candidates, _discoverer
from ._exceptions import PortNotFound as _PortNotFound
from ._models import Resolution as _Resolution

__all__ = ["ROUND_ROBIN", "ServiceChannel", "target", "target_for"]

#: Channel options that make grpcio balance calls over every address of a target
#: (its ``round_robin`` load-balancing policy): ``options=kdisco.grpc.ROUND_ROBIN``.
ROUND_ROBIN: tuple[tuple[str, str], ...] = (("grpc.lb_policy_name", "round_robin"),)


def target(
    name: str,
    *,
    port: int | str | None = None,
    namespace: str | None = None,
    backends: bool = False,
    discoverer: _discoverer.Discoverer | None = None,
) -> str:
    """A grpcio target naming every ready endpoint of a Service: a snapshot.

    Give it to ``grpc.insecure_channel`` (or ``secure_channel``, or their
    ``grpc.aio`` twins) with ``options=ROUND_ROBIN`` to spread calls over the
    endpoints. Pods that come later are not in it: `ServiceChannel` follows them.

    Args:
        name: The Service, as for `kdisco.discover`: ``"svc"``, ``"svc.ns"``, ...,
            optionally with ``:port``.
        port: The port, a name (``"grpc"``) or a number. Default None: the
            Service's first declared port, where the source knows it (cluster DNS
            does not: then `PortNotFound`).
        namespace: The namespace when ``name`` names none. Default: the
            discoverer's.
        backends: List the ready pods behind a ClusterIP Service, with their target
            ports (the api strategy reads them from the EndpointSlices), instead of
            its one virtual IP, which pins a channel to one pod. Default False.
        discoverer: Where the answer comes from. Default None: the one
            `kdisco.discover` uses.

    Returns:
        str: The target, as `target_for` makes it.

    Raises:
        PortNotFound: The Service has no such port, or the answer has no port number.
        NoReadyEndpoints: Nothing behind the Service is ready.
        DiscoveryError: Any other failure to find the Service, as `kdisco.discover`
            raises it.

    Example:
        >>> import kdisco, kdisco.grpc
        >>> from kdisco.testing import FakeResolver
        >>> pods = FakeResolver({"payments.billing": ["192.0.2.10:50051", "192.0.2.11:50051"]})
        >>> kdisco.grpc.target("payments.billing", discoverer=kdisco.Discoverer(strategies=[pods]))
        'ipv4:192.0.2.10:50051,192.0.2.11:50051'
    """
    d = discoverer if discoverer is not None else _discoverer.get_default_discoverer()
    return target_for(d.discover(name, port=port, namespace=namespace, backends=backends))


def target_for(res: _Resolution) -> str:
    """The grpcio target for an answer's usable endpoints.

    Usable: ready and not terminating; when none is, those terminating but still
    serving. grpcio takes one address family per target: IPv4 when the answer has
    any, else IPv6.

    Args:
        res: An answer from `kdisco.discover` (or a `kdisco.aio` one).

    Returns:
        str: ``"ipv4:10.0.0.1:50051,10.0.0.2:50051"``, or
        ``"ipv6:[2001:db8::1]:50051,..."``; ``"dns:///name:port"`` for an
        ExternalName Service whose name is outside the cluster, or an answer of
        host names only (``reach="external"``: a load balancer's hostname, an
        Ingress's host; when addresses come with them, the addresses are used).

    Raises:
        PortNotFound: An endpoint has no port (cluster DNS asked without a port
            name): ask for one.
        NoReadyEndpoints: No endpoint is usable.

    Example:
        >>> import kdisco, kdisco.grpc
        >>> from kdisco.testing import FakeResolver
        >>> d = kdisco.Discoverer(strategies=[FakeResolver({"db": ["[2001:db8::5]:5432"]})])
        >>> kdisco.grpc.target_for(d.discover("db"))
        'ipv6:[2001:db8::5]:5432'
    """
    usable = _candidates.usable(res.endpoints)
    if not usable:
        raise _candidates.no_ready(res.endpoints, res)
    for ep in usable:
        if ep.port is None:
            raise _PortNotFound(
                f"{res.service}: no port in the answer; ask for one (port='grpc' or a number)",
                service=res.service,
                attempts=res.attempts,
            )
    addresses = [ep for ep in usable if _is_ip(ep.host)]
    if res.external_name is not None or not addresses:
        # A host name (an ExternalName, a load balancer's hostname, an Ingress's host
        # with reach="external"): grpcio resolves it itself.
        named = next(ep for ep in usable if not _is_ip(ep.host))
        return f"dns:///{named.host}:{named.port}"
    v4 = [ep for ep in addresses if not ep.is_ipv6]
    if v4:
        return "ipv4:" + ",".join(f"{ep.host}:{ep.port}" for ep in v4)
    return "ipv6:" + ",".join(f"[{ep.host}]:{ep.port}" for ep in addresses)


def _is_ip(host: str) -> bool:
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        return True
    return False


class ServiceChannel(_grpc.Channel):
    """A ``grpc.Channel`` that follows a Service's pods.

    Stubs made on it (``PaymentsStub(channel)``) send each call on the channel for
    the current pod set, balanced round-robin over it. A watch
    (`kdisco.Discoverer.watch`, in a background thread) makes a new channel when the
    set changes; calls already running go on on the old channel, which is closed
    ``grace`` seconds later. When the Service has nothing usable for a while, the
    last channel is kept. ``close()`` (or leaving a ``with`` block) stops the watch
    and closes every channel. Sync grpcio only: for ``grpc.aio``, use `target`.

    Args:
        name: The Service, as for `kdisco.discover`, optionally with ``:port``.
        port: The port, a name (``"grpc"``) or a number. Default None: the
            Service's first declared port, where the source knows it.
        namespace: The namespace when ``name`` names none. Default: the
            discoverer's.
        backends: Follow the ready pods behind a ClusterIP Service (listed by the
            api strategy) instead of its one virtual IP. Default False.
        discoverer: Where answers come from. Default None: the one
            `kdisco.discover` uses.
        credentials: A ``grpc.ChannelCredentials`` (``grpc.ssl_channel_credentials()``)
            for TLS. Default None: an insecure channel.
        options: More channel options, added after `ROUND_ROBIN`. Default: none.
        grace: Seconds an old channel stays open for the calls still running on it.
            Closing a grpcio channel cancels what still runs on it, so make it longer
            than your longest call. Default 30.

    Attributes:
        target: The grpcio target of the channel new calls go on (see `target_for`).

    Raises:
        PortNotFound: The Service has no such port, or the answer has no port number.
        NoReadyEndpoints: Nothing behind the Service is ready at construction.
        DiscoveryError: Any other failure to find the Service at construction, as
            `kdisco.discover` raises it.

    Example:
        >>> import kdisco, kdisco.grpc
        >>> from kdisco.testing import FakeResolver
        >>> pods = FakeResolver({"payments.billing": ["192.0.2.10:50051", "192.0.2.11:50051"]})
        >>> d = kdisco.Discoverer(strategies=[pods])
        >>> with kdisco.grpc.ServiceChannel("payments.billing", discoverer=d) as channel:
        ...     channel.target                 # stubs: PaymentsStub(channel)
        'ipv4:192.0.2.10:50051,192.0.2.11:50051'
    """

    def __init__(
        self,
        name: str,
        *,
        port: int | str | None = None,
        namespace: str | None = None,
        backends: bool = False,
        discoverer: _discoverer.Discoverer | None = None,
        credentials: _grpc.ChannelCredentials | None = None,
        options: _abc.Sequence[tuple[str, _typing.Any]] = (),
        grace: float = 30.0,
    ) -> None:
        d = discoverer if discoverer is not None else _discoverer.get_default_discoverer()
        self._credentials = credentials
        self._options = [*ROUND_ROBIN, *options]
        self._grace = grace
        self._lock = _threading.Lock()
        self._closed = False
        self._timers: list[_threading.Timer] = []
        self.target = target_for(
            d.discover(name, port=port, namespace=namespace, backends=backends)
        )
        self._channel = self._make(self.target)
        self._watch = d.watch(
            name, port=port, namespace=namespace, backends=backends, callback=self._changed
        )

    def _make(self, address: str) -> _grpc.Channel:
        if self._credentials is None:
            return _grpc.insecure_channel(address, options=self._options)
        return _grpc.secure_channel(address, self._credentials, options=self._options)

    def _changed(self, res: _Resolution) -> None:
        try:
            address = target_for(res)
        except Exception:
            return  # nothing to connect to: keep the last channel rather than none
        with self._lock:
            if self._closed or address == self.target:
                return
            old, self._channel, self.target = self._channel, self._make(address), address
            timer = _threading.Timer(self._grace, old.close)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()] + [timer]
        timer.start()

    @property
    def current(self) -> _grpc.Channel:
        """The grpcio channel new calls go on (replaced when the pods change)."""
        return self._channel

    # -- grpc.Channel ------------------------------------------------------------------

    def subscribe(self, callback: _typing.Any, try_to_connect: bool = False) -> None:
        """Follow the connectivity of the current channel (``grpc.Channel.subscribe``).

        A channel made later for a new pod set is not followed.

        Args:
            callback: Called with each ``grpc.ChannelConnectivity`` of the channel.
            try_to_connect: Also start connecting the channel. Default False.
        """
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: _typing.Any) -> None:
        """Stop following the current channel's connectivity.

        Args:
            callback: A callback given to `subscribe`.
        """
        self._channel.unsubscribe(callback)

    def unary_unary(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        """A unary-unary multi-callable whose calls go on the current channel.

        Generated stubs call this; see ``grpc.Channel.unary_unary``.

        Args:
            method: The method's full name, ``"/package.Service/Method"``.
            *args: Passed to the channel's ``unary_unary`` (``request_serializer``,
                ``response_deserializer``).
            **kwargs: Passed to the channel's ``unary_unary``, as ``args``.

        Returns:
            A multi-callable (``__call__``, ``with_call``, ``future``).
        """
        return _Method(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        """A unary-stream multi-callable whose calls go on the current channel.

        Args:
            method: The method's full name, ``"/package.Service/Method"``.
            *args: Passed to the channel's ``unary_stream``.
            **kwargs: Passed to the channel's ``unary_stream``.

        Returns:
            A multi-callable.
        """
        return _Method(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        """A stream-unary multi-callable whose calls go on the current channel.

        Args:
            method: The method's full name, ``"/package.Service/Method"``.
            *args: Passed to the channel's ``stream_unary``.
            **kwargs: Passed to the channel's ``stream_unary``.

        Returns:
            A multi-callable (``__call__``, ``with_call``, ``future``).
        """
        return _Method(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        """A stream-stream multi-callable whose calls go on the current channel.

        Args:
            method: The method's full name, ``"/package.Service/Method"``.
            *args: Passed to the channel's ``stream_stream``.
            **kwargs: Passed to the channel's ``stream_stream``.

        Returns:
            A multi-callable.
        """
        return _Method(self, "stream_stream", method, args, kwargs)

    def close(self) -> None:
        """Stop following the Service and close every channel, old ones at once
        (cancelling the calls still on them)."""
        with self._lock:
            self._closed = True
            timers, self._timers = self._timers, []
        self._watch.stop()
        for timer in timers:
            timer.cancel()
            timer.function()  # close that old channel now
        self._channel.close()

    def __enter__(self) -> ServiceChannel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Method:
    """A multi-callable that sends each call on the owner's current channel (stubs
    keep these for their life, so they must not hold a channel themselves)."""

    def __init__(
        self,
        owner: ServiceChannel,
        kind: str,
        method: str,
        args: tuple[_typing.Any, ...],
        kwargs: dict[str, _typing.Any],
    ) -> None:
        self._owner = owner
        self._kind = kind
        self._method = method
        self._args = args
        self._kwargs = kwargs
        self._bound: tuple[_grpc.Channel, _typing.Any] | None = None

    def _callable(self) -> _typing.Any:
        channel = self._owner.current
        bound = self._bound
        if bound is None or bound[0] is not channel:
            make = getattr(channel, self._kind)
            bound = self._bound = (channel, make(self._method, *self._args, **self._kwargs))
        return bound[1]

    def __call__(self, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return self._callable()(*args, **kwargs)

    def with_call(self, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return self._callable().with_call(*args, **kwargs)

    def future(self, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return self._callable().future(*args, **kwargs)
