"""gRPC clients spread over a Service's pods (``pip install kdisco[grpc]``).

A ClusterIP pins a gRPC channel (one long-lived HTTP/2 connection) to the one pod
kube-proxy chose when it connected: every call goes there. Balancing needs the pods'
addresses, and grpcio balances over an address list itself::

    target = kdisco.grpc.target("payments.billing", port="grpc")
    channel = grpc.insecure_channel(target, options=kdisco.grpc.ROUND_ROBIN)

``target`` is a snapshot. ``ServiceChannel`` follows the Service instead: when the
pod set changes it makes a new channel and sends new calls there, while calls
already running finish on the old one (closed after ``grace`` seconds). Ask for the
pods behind a ClusterIP with a headless Service (or the api strategy's endpoints).
"""

from __future__ import annotations

import collections.abc as _abc
import threading as _threading
import typing as _typing

import grpc as _grpc

from . import _candidates, _discoverer
from ._exceptions import PortNotFound as _PortNotFound
from ._models import Resolution as _Resolution

__all__ = ["ROUND_ROBIN", "ServiceChannel", "target", "target_for"]

#: Channel options that make grpcio balance calls over every address of a target.
ROUND_ROBIN: tuple[tuple[str, str], ...] = (("grpc.lb_policy_name", "round_robin"),)


def target(
    name: str,
    *,
    port: int | str | None = None,
    namespace: str | None = None,
    backends: bool = False,
    discoverer: _discoverer.Discoverer | None = None,
) -> str:
    """A grpcio target naming every ready endpoint of Service ``name`` (see
    ``target_for``), from ``discoverer`` (default: the one ``kdisco.discover()`` uses).
    ``backends=True``: the pods behind a ClusterIP Service (the api strategy lists
    them), which is what a long-lived channel needs to spread its calls."""
    d = discoverer if discoverer is not None else _discoverer.get_default_discoverer()
    return target_for(d.discover(name, port=port, namespace=namespace, backends=backends))


def target_for(res: _Resolution) -> str:
    """``ipv4:10.0.0.1:50051,10.0.0.2:50051`` (or ``ipv6:[...]:port,...``) for the
    answer's usable endpoints; ``dns:///name:port`` for an ExternalName.

    grpcio takes one address family per target: IPv4 when the answer has any, else
    IPv6. Raises ``PortNotFound`` when the answer has no port (ask for one).
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
    if res.external_name is not None:
        return f"dns:///{usable[0].host}:{usable[0].port}"
    v4 = [ep for ep in usable if not ep.is_ipv6]
    if v4:
        return "ipv4:" + ",".join(f"{ep.host}:{ep.port}" for ep in v4)
    return "ipv6:" + ",".join(f"[{ep.host}]:{ep.port}" for ep in usable)


class ServiceChannel(_grpc.Channel):
    """A ``grpc.Channel`` that follows a Service's pods.

    Stubs made on it (``PaymentsStub(channel)``) send each call on the channel for
    the current pod set. A watch (``Discoverer.watch``) makes a new channel when the
    set changes; calls already running go on on the old channel, which is closed
    ``grace`` seconds later (closing a grpcio channel cancels what still runs on it,
    so ``grace`` should exceed your longest call). ``credentials``: a
    ``grpc.ChannelCredentials`` for a secure channel, None for an insecure one.
    ``options`` are added to ``ROUND_ROBIN``. ``close()`` stops the watch and closes
    every channel.
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
        """The channel new calls go on."""
        return self._channel

    # -- grpc.Channel ------------------------------------------------------------------

    def subscribe(self, callback: _typing.Any, try_to_connect: bool = False) -> None:
        self._channel.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: _typing.Any) -> None:
        self._channel.unsubscribe(callback)

    def unary_unary(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return _Method(self, "unary_unary", method, args, kwargs)

    def unary_stream(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return _Method(self, "unary_stream", method, args, kwargs)

    def stream_unary(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return _Method(self, "stream_unary", method, args, kwargs)

    def stream_stream(self, method: str, *args: _typing.Any, **kwargs: _typing.Any) -> _typing.Any:
        return _Method(self, "stream_stream", method, args, kwargs)

    def close(self) -> None:
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
