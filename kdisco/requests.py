"""A ``requests`` adapter that resolves Service names at request time
(``pip install kdisco[requests]``).

    >>> import requests, kdisco.requests
    >>> session = requests.Session()
    >>> session.mount("http://", kdisco.requests.Adapter())     # doctest: +SKIP
    >>> session.mount("https://", kdisco.requests.Adapter())    # doctest: +SKIP
    >>> session.get("http://payments.billing/charge")          # doctest: +SKIP

The same rules as ``kdisco.httpx.Transport``: Service names in URLs go to one of the
Service's endpoints picked by a ``kdisco.Balancer``, keeping the ``Host`` header and
checking TLS against the name; idempotent requests whose connection failed are
retried on another endpoint; other hosts pass through. See docs/http.md.
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
    """Mount on a ``requests.Session`` for ``http://`` and ``https://``.

    ``discoverer``, ``balancer``, ``retries``, ``failure_statuses`` and ``backends`` as for
    ``kdisco.httpx.Transport``; other keyword arguments go to ``HTTPAdapter``
    (``pool_maxsize``, ...). Its own ``max_retries`` stays 0: retrying the same
    address is what this adapter replaces.
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
        """The Balancer in use (the default one is made on the first request)."""
        d = self._discoverer or _discoverer.get_default_discoverer()
        return self._routing.balancing.get(d.settings, d.strategies)

    def build_connection_pool_key_attributes(
        self, request: _requests.PreparedRequest, verify: _typing.Any, cert: _typing.Any = None
    ) -> tuple[dict[str, _typing.Any], dict[str, _typing.Any]]:
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
