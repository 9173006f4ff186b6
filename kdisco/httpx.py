"""httpx transports that resolve Service names at request time (``pip install kdisco[httpx]``).

    >>> import httpx, kdisco.httpx
    >>> client = httpx.Client(transport=kdisco.httpx.Transport())        # doctest: +SKIP
    >>> client.get("http://payments.billing/charge")                    # doctest: +SKIP

    >>> client = httpx.AsyncClient(transport=kdisco.httpx.AsyncTransport())  # doctest: +SKIP

A URL whose host is a Service name (``payments``, ``payments.billing``, ...,
``_grpc._tcp.payments.billing`` for a named port) is sent to one of its endpoints,
picked by a ``kdisco.Balancer`` (round-robin unless you give another); the
``Host`` header keeps the name, and TLS checks the certificate against the name
(SNI too) while the TCP connection goes to the endpoint. Idempotent requests whose
connection could not be made are retried on another endpoint (``retries`` times);
each outcome is reported to the balancer, which ejects failing endpoints. Answers
come from the ``Discoverer`` (cached, so re-resolving per request is cheap and
sees changes). Other hosts pass through untouched. See docs/http.md.
"""

from __future__ import annotations

import collections.abc as _abc
import typing as _typing

import httpx as _httpx

from . import _aio, _balancer, _discoverer, _http

__all__ = ["AsyncTransport", "Transport"]

_CONNECT_ERRORS = (_httpx.ConnectError, _httpx.ConnectTimeout)


class _Common:
    def __init__(
        self,
        balancer: _balancer.Balancer | None,
        retries: int,
        failure_statuses: _abc.Iterable[int],
        backends: bool,
    ) -> None:
        self._routing = _http.Routing(balancer, retries, failure_statuses, backends)

    def _target(self, request: _httpx.Request, cluster_domain: str) -> _http.Target | None:
        url = request.url
        return _http.target_of(url.scheme, url.host, url.port, cluster_domain=cluster_domain)

    def _tracked(self, response: _httpx.Response, pick: _balancer.Pick) -> _httpx.Response:
        statuses = self._routing.failure_statuses
        status = response.status_code

        def done(ok: bool) -> None:
            if ok:
                _http.judge(status, pick, statuses)
            else:
                pick.failed()

        response.stream = _TrackedStream(response.stream, done)
        return response

    def _point(self, request: _httpx.Request, target: _http.Target, pick: _balancer.Pick) -> None:
        ep = pick.endpoint
        route = _http.route_of(ep, request.url.path)
        if route is not None:
            # An Ingress route: its URL, and the Host it routes on (TLS, if any, is
            # checked against that host, the name the connection really goes to).
            request.url = request.url.copy_with(
                scheme=route.scheme, host=ep.host, port=route.port, path=route.path
            )
            request.headers["Host"] = route.host_header
            return
        request.url = _at(request.url, ep.host, _http.port_of(ep, target))
        if request.url.scheme == "https":
            # The TLS handshake names the Service (SNI) and checks its certificate
            # against that name, whatever address the connection goes to.
            request.extensions = {**request.extensions, "sni_hostname": target.host}


def _at(url: _httpx.URL, host: str, port: int) -> _httpx.URL:
    """``url`` with another host and port.

    httpx keeps a URL's parsed form in ``_uri_reference`` (a named tuple); replacing
    two of its fields costs ~1 µs where ``copy_with`` re-parses the whole URL (~29 µs,
    most of what the transport would add to a request). ``host`` is an address from
    an answer, already validated. Any other httpx falls back to ``copy_with``.
    """
    ref = getattr(url, "_uri_reference", None)
    replace = getattr(ref, "_replace", None)
    if replace is None:
        return url.copy_with(host=host, port=port)
    moved = _httpx.URL.__new__(_httpx.URL)
    moved._uri_reference = replace(host=host, port=port)
    return moved


class _TrackedStream(_httpx.SyncByteStream, _httpx.AsyncByteStream):
    """A response body that reports the request's outcome when it is closed: the
    request is in flight (for ``PowerOfTwo`` and ``LeastResponseTime``) until its body
    is read, and a body cut short is the endpoint's failure."""

    def __init__(self, stream: _typing.Any, done: _abc.Callable[[bool], None]) -> None:
        self._stream = stream
        self._done = done
        self._ok = True

    def __iter__(self) -> _abc.Iterator[bytes]:
        try:
            yield from self._stream
        except Exception:
            self._ok = False
            raise

    async def __aiter__(self) -> _abc.AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception:
            self._ok = False
            raise

    def close(self) -> None:
        try:
            self._stream.close()
        finally:
            self._done(self._ok)

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            self._done(self._ok)


class Transport(_Common, _httpx.BaseTransport):
    """An ``httpx`` transport for ``httpx.Client(transport=...)``.

    ``discoverer``: where answers come from (default: the one ``kdisco.discover()``
    uses, ``kdisco.testing.override`` included). ``balancer``: a ``kdisco.Balancer``
    (default: round-robin with outlier ejection). ``retries``: retries of an
    idempotent request whose connection failed, each on another endpoint.
    ``failure_statuses``: response codes reported to the balancer as failures (e.g.
    ``{502, 503}``; the response is returned either way). ``backends=True``: balance
    over the pods behind a ClusterIP Service (listed by the api strategy) rather than
    send everything to its virtual IP. ``transport``: the
    transport that sends (default ``httpx.HTTPTransport(**kwargs)``).
    """

    def __init__(
        self,
        discoverer: _discoverer.Discoverer | None = None,
        *,
        balancer: _balancer.Balancer | None = None,
        retries: int = 2,
        failure_statuses: _abc.Iterable[int] = (),
        backends: bool = False,
        transport: _httpx.BaseTransport | None = None,
        **kwargs: _typing.Any,
    ) -> None:
        super().__init__(balancer, retries, failure_statuses, backends)
        self._discoverer = discoverer
        self._inner = transport if transport is not None else _httpx.HTTPTransport(**kwargs)

    def handle_request(self, request: _httpx.Request) -> _httpx.Response:
        d = self._discoverer or _discoverer.get_default_discoverer()
        target = self._target(request, d.cluster_domain)
        res = self._routing.answer(target, d)
        if target is None or res is None:
            return self._inner.handle_request(request)
        return self._send(request, target, self._routing.tries(res, request.method, d))

    @property
    def balancer(self) -> _balancer.Balancer:
        """The Balancer in use (the default one is made on the first request)."""
        d = self._discoverer or _discoverer.get_default_discoverer()
        return self._routing.balancing.get(d.settings, d.strategies)

    def _send(
        self, request: _httpx.Request, target: _http.Target, tries: _http.Tries
    ) -> _httpx.Response:
        url, extensions, host = request.url, request.extensions, request.headers.get("Host")
        while True:
            pick = tries.next()
            self._point(request, target, pick)
            try:
                response = self._inner.handle_request(request)
            except BaseException as exc:
                if _http.after_failure(exc, pick, tries, _CONNECT_ERRORS):
                    continue
                raise
            finally:
                # What the caller sees (response.request, redirects) names the Service.
                request.url, request.extensions = url, extensions
                if host is not None:  # an Ingress route sent its own
                    request.headers["Host"] = host
            return self._tracked(response, pick)

    def close(self) -> None:
        self._inner.close()


class AsyncTransport(_Common, _httpx.AsyncBaseTransport):
    """``Transport`` for ``httpx.AsyncClient``: answers from ``kdisco.aio`` (an
    ``AsyncDiscoverer``, default the one ``kdisco.aio.discover()`` uses), never
    blocking the event loop."""

    def __init__(
        self,
        discoverer: _aio.AsyncDiscoverer | None = None,
        *,
        balancer: _balancer.Balancer | None = None,
        retries: int = 2,
        failure_statuses: _abc.Iterable[int] = (),
        backends: bool = False,
        transport: _httpx.AsyncBaseTransport | None = None,
        **kwargs: _typing.Any,
    ) -> None:
        super().__init__(balancer, retries, failure_statuses, backends)
        self._discoverer = discoverer
        self._inner = transport if transport is not None else _httpx.AsyncHTTPTransport(**kwargs)

    async def handle_async_request(self, request: _httpx.Request) -> _httpx.Response:
        d = self._discoverer or await _aio.default_discoverer()
        target = self._target(request, d.sync.cluster_domain)
        res = await self._routing.aanswer(target, d)
        if target is None or res is None:
            return await self._inner.handle_async_request(request)
        tries = await self._routing.atries(res, request.method, d)
        url, extensions, host = request.url, request.extensions, request.headers.get("Host")
        while True:
            pick = tries.next()
            self._point(request, target, pick)
            try:
                response = await self._inner.handle_async_request(request)
            except BaseException as exc:
                if _http.after_failure(exc, pick, tries, _CONNECT_ERRORS):
                    continue
                raise
            finally:
                request.url, request.extensions = url, extensions
                if host is not None:  # an Ingress route sent its own
                    request.headers["Host"] = host
            return self._tracked(response, pick)

    @property
    def balancer(self) -> _balancer.Balancer:
        """The Balancer in use (the default one is made on the first request)."""
        ready = self._routing.balancing.ready
        if ready is not None:
            return ready
        d = self._discoverer.sync if self._discoverer else _discoverer.get_default_discoverer()
        return self._routing.balancing.get(d.settings, d.strategies)

    async def aclose(self) -> None:
        await self._inner.aclose()
