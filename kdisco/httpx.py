"""httpx transports that resolve Service names at request time (``pip install kdisco[httpx]``).

    >>> import httpx, kdisco.httpx
    >>> client = httpx.Client(transport=kdisco.httpx.Transport())        # doctest: +SKIP
    >>> client.get("http://payments.billing/charge")                    # doctest: +SKIP

    >>> client = httpx.AsyncClient(transport=kdisco.httpx.AsyncTransport())  # doctest: +SKIP

A URL whose host is a Service name (``payments``, ``payments.billing``, ...,
``_grpc._tcp.payments.billing`` for a named port) is sent to one of its endpoints,
picked by a ``kdisco.Balancer`` (round-robin unless you give another); the
``Host`` header keeps the name, and TLS checks the certificate against the name
(SNI too) while the TCP connection goes to the endpoint. An answer that is an
Ingress route (``reach="external"``) sends the request to the route's URL instead,
with the rule's host as ``Host``. Idempotent requests whose connection could not be
made are retried on another endpoint (``retries`` times); each outcome is reported
to the balancer, which ejects failing endpoints. Answers come from the
``Discoverer`` (cached, so re-resolving per request is cheap and sees changes).
Other hosts pass through untouched. See docs/http.md.
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
    """An httpx transport that sends requests for a Service to one of its endpoints.

    Give it to ``httpx.Client(transport=...)``. A request whose URL host is a Service
    name (``payments``, ``payments.billing``, ``payments.billing.svc``,
    ``payments.billing.svc.<cluster-domain>``, or ``_<port>._tcp.payments.billing``
    to name a port) is answered by ``discoverer`` (cached: about a microsecond per
    request, and a changed answer is seen at once) and sent to the endpoint
    ``balancer`` picks:

    - the port is the URL's number, else the Service port named after the scheme
      (``http`` or ``https``), else the Service's only port;
    - the ``Host`` header keeps the name, and for ``https`` the TLS handshake names
      the Service (SNI) and checks its certificate against that name, while the TCP
      connection goes to the endpoint's address;
    - an endpoint that is an Ingress route (what ``reach="external"`` answers with
      outside the cluster) gets the request at the route's URL: its scheme and port,
      the request's path under the route's path, and the rule's host as ``Host``;
    - an idempotent request (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) whose
      connection could not be made is retried on another endpoint;
    - every outcome is reported to the balancer, which ejects endpoints that keep
      failing. The request stays in flight until its response body is read or
      closed, and a body cut short counts as the endpoint's failure.

    Other hosts (IP addresses, ``localhost``, ``api.example.com``, and a two-label
    name every strategy says is no Service, remembered as such for 30 s) go to
    ``transport`` as they are; a two-label name whose lookup fails otherwise
    (``AccessDenied``, ``DiscoveryUnavailable``) raises that error.
    ``response.request.url`` and the ``Host`` header the caller set are restored:
    what the caller sees names the Service.

    Args:
        discoverer: Where answers come from. Default None: the one
            `kdisco.discover` uses, looked up on each request (so
            `kdisco.testing.override` reaches it).
        balancer: The `kdisco.Balancer` that picks endpoints and learns their
            health. Default None: a round-robin one with the default
            `OutlierPolicy`, made on the first request, which knows the caller's
            zone and node (``KDISCO_ZONE``; ``KDISCO_NODE``, else ``NODE_NAME``;
            else this node's zone label when the api strategy may read Nodes) for
            Services whose ``trafficDistribution`` prefers near endpoints.
        retries: How many more endpoints an idempotent request whose connection
            failed is tried on (a whole number, 0 or more). Default 2.
        failure_statuses: Response status codes reported to the balancer as
            failures, such as ``{502, 503}``; the response is returned either way.
            Default: none (every response is a success).
        backends: Balance over the ready pods behind a ClusterIP Service, with their
            target ports (the api strategy lists them from the EndpointSlices),
            instead of sending every request to its one virtual IP. Default False.
        transport: The httpx transport that sends each request. Default None:
            ``httpx.HTTPTransport(**kwargs)``.
        **kwargs: Passed to ``httpx.HTTPTransport`` when ``transport`` is None:
            ``verify``, ``cert``, ``limits``, ``http2``, ... Set them here: a
            ``Client`` given a transport does not pass its own on.

    Raises:
        ConfigurationError: ``retries`` is not a whole number of 0 or more.

    Example:
        An httpx ``MockTransport`` stands for the pod here:

        >>> import httpx, kdisco, kdisco.httpx
        >>> from kdisco.testing import FakeResolver
        >>> pods = FakeResolver({"payments.billing": ["192.0.2.10:8080"]})
        >>> d = kdisco.Discoverer(strategies=[pods])
        >>> def pod(request):
        ...     return httpx.Response(200, text=f"{request.url} Host={request.headers['Host']}")
        >>> sender = httpx.MockTransport(pod)
        >>> client = httpx.Client(transport=kdisco.httpx.Transport(d, transport=sender))
        >>> client.get("http://payments.billing/charge").text
        'http://192.0.2.10:8080/charge Host=payments.billing'
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
        """Send one request: to an endpoint when its host is a Service, else as it is.

        httpx calls this; applications call ``client.get()`` and the like.

        Args:
            request: The request. Its URL, extensions and ``Host`` header are moved
                to the endpoint while it is sent, and restored before this returns.

        Returns:
            httpx.Response: The endpoint's response. Reading or closing its body
            reports the outcome to the balancer.

        Raises:
            NoReadyEndpoints: The Service exists and nothing behind it is ready.
            PortNotFound: No port was found for the URL: it names none, the Service
                has no port named after the scheme and not exactly one port, or the
                answer has no port numbers (cluster DNS without a port name).
            InvalidServiceName: The host names a port (``_grpc._tcp.svc.ns``) and
                the URL has a port number too.
            DiscoveryError: Any other failure to find the Service (`AccessDenied`,
                `DiscoveryTimeout`, ...). A Service that does not exist is no
                error: the request goes out as it is.
            httpx.HTTPError: What ``transport`` raised for the last endpoint tried.
        """
        d = self._discoverer or _discoverer.get_default_discoverer()
        target = self._target(request, d.cluster_domain)
        res = self._routing.answer(target, d)
        if target is None or res is None:
            return self._inner.handle_request(request)
        return self._send(request, target, self._routing.tries(res, request.method, d))

    @property
    def balancer(self) -> _balancer.Balancer:
        """The `kdisco.Balancer` in use (the one given, or the default one, made now
        if no request has made it yet), for ``balancer.health(endpoint)``."""
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
        """Close the transport that sends (``httpx.Client.close()`` calls this)."""
        self._inner.close()


class AsyncTransport(_Common, _httpx.AsyncBaseTransport):
    """`Transport` for ``httpx.AsyncClient``, never blocking the event loop.

    Give it to ``httpx.AsyncClient(transport=...)``. Requests are routed, retried and
    reported exactly as `Transport` does it, with answers from `kdisco.aio` (DNS over
    non-blocking sockets, the API watch cache awaited). The default balancer is made
    in a worker thread on the first request, as it may ask the API for this node's
    zone.

    Args:
        discoverer: Where answers come from: a `kdisco.aio.AsyncDiscoverer`.
            Default None: the one `kdisco.aio.discover` uses, looked up on each
            request (so `kdisco.testing.override` reaches it).
        balancer: The `kdisco.Balancer` that picks endpoints and learns their
            health. Default None: a round-robin one, as for `Transport`.
        retries: How many more endpoints an idempotent request whose connection
            failed is tried on (a whole number, 0 or more). Default 2.
        failure_statuses: Response status codes reported to the balancer as
            failures, such as ``{502, 503}``; the response is returned either way.
            Default: none.
        backends: Balance over the ready pods behind a ClusterIP Service instead of
            its virtual IP, as for `Transport`. Default False.
        transport: The httpx async transport that sends each request. Default None:
            ``httpx.AsyncHTTPTransport(**kwargs)``.
        **kwargs: Passed to ``httpx.AsyncHTTPTransport`` when ``transport`` is None
            (``verify``, ``cert``, ``limits``, ``http2``, ...).

    Raises:
        ConfigurationError: ``retries`` is not a whole number of 0 or more.

    Example:
        >>> import asyncio, httpx, kdisco.aio, kdisco.httpx
        >>> from kdisco.testing import FakeResolver
        >>> pods = FakeResolver({"payments.billing": ["192.0.2.10:8080"]})
        >>> sender = httpx.MockTransport(lambda request: httpx.Response(200, text=str(request.url)))
        >>> async def charge():
        ...     async with kdisco.aio.AsyncDiscoverer(strategies=[pods]) as d:
        ...         transport = kdisco.httpx.AsyncTransport(d, transport=sender)
        ...         async with httpx.AsyncClient(transport=transport) as client:
        ...             return (await client.post("http://payments.billing/charge")).text
        >>> asyncio.run(charge())
        'http://192.0.2.10:8080/charge'
    """

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
        """`Transport.handle_request` for the event loop; httpx awaits it.

        Args:
            request: The request, moved to the endpoint while it is sent and restored
                before this returns.

        Returns:
            httpx.Response: The endpoint's response; closing its body (``aclose``,
            or reading it to the end) reports the outcome to the balancer.

        Raises:
            DiscoveryError: The Service exists and cannot be reached
                (`NoReadyEndpoints`, `PortNotFound`, ...), as for
                `Transport.handle_request`.
            httpx.HTTPError: What ``transport`` raised for the last endpoint tried.
        """
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
        """The `kdisco.Balancer` in use (the one given, or the default one, made now
        and blocking if no request has made it yet)."""
        ready = self._routing.balancing.ready
        if ready is not None:
            return ready
        d = self._discoverer.sync if self._discoverer else _discoverer.get_default_discoverer()
        return self._routing.balancing.get(d.settings, d.strategies)

    async def aclose(self) -> None:
        """Close the transport that sends (``httpx.AsyncClient.aclose()`` calls this)."""
        await self._inner.aclose()
