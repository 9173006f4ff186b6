"""A ``requests`` adapter that resolves Service names at request time
(``pip install kdisco[requests]``).

    >>> import requests, kdisco.requests
    >>> session = requests.Session()
    >>> session.mount("http://", kdisco.requests.Adapter())     # doctest: +SKIP
    >>> session.mount("https://", kdisco.requests.Adapter())    # doctest: +SKIP
    >>> session.get("http://payments.billing/charge")          # doctest: +SKIP

The same rules as ``kdisco.httpx.Transport``: Service names in URLs go to one of the
Service's endpoints picked by a ``kdisco.Balancer``, keeping the ``Host`` header and
checking TLS against the name (an Ingress route's URL and host with
``reach="external"``); idempotent requests whose connection failed are retried on
another endpoint; other hosts pass through. See docs/http.md.
"""

from __future__ import annotations

import collections.abc as _abc
import typing as _typing
import weakref as _weakref

import requests as _requests
import requests.adapters as _adapters
import urllib3.util as _urllib3_util

from . import _balancer, _discoverer, _http

__all__ = ["Adapter"]


class Adapter(_adapters.HTTPAdapter):
    """A requests transport adapter that sends requests for a Service to one of its
    endpoints.

    Mount it on a ``requests.Session`` for ``http://`` and ``https://``. It follows
    the rules of `kdisco.httpx.Transport`: a URL whose host is a Service name goes to
    the endpoint the ``balancer`` picks, on the URL's port number, else the Service
    port named after the scheme, else its only port; the ``Host`` header keeps the
    name and TLS is checked against it (SNI too); an Ingress route answered with
    ``reach="external"`` gets the request at its URL, with the rule's host as
    ``Host``; an idempotent request whose connection failed is retried on another
    endpoint; each response is reported to the balancer. Other hosts pass through.
    ``response.url`` names the Service, as written.

    Args:
        discoverer: Where answers come from. Default None: the one
            `kdisco.discover` uses, looked up on each request (so
            `kdisco.testing.override` reaches it).
        balancer: The `kdisco.Balancer` that picks endpoints and learns their
            health. Default None: a round-robin one made on the first request, as
            for `kdisco.httpx.Transport`.
        retries: How many more endpoints an idempotent request whose connection
            failed is tried on (a whole number, 0 or more). Default 2.
        failure_statuses: Response status codes reported to the balancer as
            failures, such as ``{502, 503}``; the response is returned either way.
            Default: none.
        backends: Balance over the ready pods behind a ClusterIP Service (listed by
            the api strategy) instead of its virtual IP. Default False.
        **kwargs: Passed to ``requests.adapters.HTTPAdapter`` (``pool_connections``,
            ``pool_maxsize``, ``pool_block``). Its ``max_retries`` stays 0:
            retrying the same address is what this adapter replaces.

    Raises:
        ConfigurationError: ``retries`` is not a whole number of 0 or more.

    Example:
        >>> import requests, kdisco.requests
        >>> session = requests.Session()
        >>> adapter = kdisco.requests.Adapter(retries=1, failure_statuses={503})
        >>> session.mount("http://", adapter)
        >>> session.mount("https://", adapter)
        >>> session.get("http://payments.billing/charge")  # doctest: +SKIP
        <Response [200]>
    """

    def __init__(
        self,
        discoverer: _discoverer.Discoverer | None = None,
        *,
        balancer: _balancer.Balancer | None = None,
        retries: int = 2,
        failure_statuses: _abc.Iterable[int] = (),
        backends: bool = False,
        **kwargs: _typing.Any,
    ) -> None:
        routing = _http.Routing(balancer, retries, failure_statuses, backends)
        super().__init__(**kwargs)
        self._routing = routing
        self._discoverer = discoverer
        # The Service name each request in flight is for: TLS checks against it.
        self._tls_names: _weakref.WeakKeyDictionary[_requests.PreparedRequest, str] = (
            _weakref.WeakKeyDictionary()
        )

    def send(
        self, request: _requests.PreparedRequest, *args: _typing.Any, **kwargs: _typing.Any
    ) -> _requests.Response:
        """Send one request: to an endpoint when its host is a Service, else as it is.

        requests calls this; applications call ``session.get()`` and the like.

        Args:
            request: The prepared request. Its URL and ``Host`` header are moved to
                the endpoint while it is sent, and restored before this returns.
            *args: Passed to ``HTTPAdapter.send`` (``stream``, ``timeout``,
                ``verify``, ``cert``, ``proxies``).
            **kwargs: Passed to ``HTTPAdapter.send``, as ``args``.

        Returns:
            requests.Response: The endpoint's response; its ``url`` is the URL as
            the caller wrote it.

        Raises:
            NoReadyEndpoints: The Service exists and nothing behind it is ready.
            PortNotFound: No port was found for the URL (see
                `kdisco.httpx.Transport.handle_request`).
            InvalidServiceName: The host names a port and the URL has a number too.
            DiscoveryError: Any other failure to find the Service. A Service that
                does not exist is no error: the request goes out as it is.
            requests.RequestException: What ``HTTPAdapter.send`` raised for the last
                endpoint tried.
        """
        d = self._discoverer or _discoverer.get_default_discoverer()
        url = _urllib3_util.parse_url(request.url or "")
        target = _http.target_of(
            url.scheme or "http", url.host or "", url.port, cluster_domain=d.cluster_domain
        )
        res = self._routing.answer(target, d)
        if target is None or res is None:
            return super().send(request, *args, **kwargs)
        original, had_host = request.url, "Host" in request.headers
        original_host = request.headers.get("Host")
        if not had_host:
            request.headers["Host"] = url.netloc or ""
        tries = self._routing.tries(res, request.method or "GET", d)
        try:
            while True:
                pick = tries.next()
                ep = pick.endpoint
                host = f"[{ep.host}]" if ":" in ep.host else ep.host
                route = _http.route_of(ep, url.path or "/")
                if route is not None:
                    # An Ingress route: its URL and the Host it routes on; TLS is
                    # checked against that host, the name connected to.
                    request.url = url._replace(
                        scheme=route.scheme, host=host, port=route.port, path=route.path
                    ).url
                    request.headers["Host"] = route.host_header
                else:
                    request.url = url._replace(host=host, port=_http.port_of(ep, target)).url
                    self._tls_names[request] = target.host
                try:
                    response = super().send(request, *args, **kwargs)
                except BaseException as exc:
                    if _http.after_failure(exc, pick, tries, _requests.ConnectionError):
                        continue
                    raise
                _http.judge(response.status_code, pick, self._routing.failure_statuses)
                response.url = original or ""
                return response
        finally:
            request.url = original
            self._tls_names.pop(request, None)
            if not had_host:
                del request.headers["Host"]
            elif original_host is not None:
                request.headers["Host"] = original_host

    @property
    def balancer(self) -> _balancer.Balancer:
        """The `kdisco.Balancer` in use (the one given, or the default one, made now
        if no request has made it yet), for ``balancer.health(endpoint)``."""
        d = self._discoverer or _discoverer.get_default_discoverer()
        return self._routing.balancing.get(d.settings, d.strategies)

    def build_connection_pool_key_attributes(
        self, request: _requests.PreparedRequest, verify: _typing.Any, cert: _typing.Any = None
    ) -> tuple[dict[str, _typing.Any], dict[str, _typing.Any]]:
        """The connection pool for ``request``: ``HTTPAdapter``'s, and for ``https`` to
        an endpoint, the Service name to send in SNI and check the certificate against.

        requests calls this for each request; it is not meant to be called directly.

        Args:
            request: The prepared request, its URL already moved to the endpoint.
            verify: As for ``HTTPAdapter``: True, False or a CA bundle path.
            cert: As for ``HTTPAdapter``: a client certificate, or None.

        Returns:
            tuple[dict, dict]: The pool's host parameters and its keyword arguments
            (with ``server_hostname`` and ``assert_hostname`` set to the Service
            name for ``https`` to an endpoint).
        """
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(
            request, verify, cert
        )
        name = self._tls_names.get(request)
        if name is not None and host_params.get("scheme") == "https":
            # Connect to the endpoint, but name the Service in SNI and check its
            # certificate against that name. Part of the pool key: a pool per name.
            pool_kwargs["server_hostname"] = name
            pool_kwargs["assert_hostname"] = name
        return host_params, pool_kwargs
