"""Talking to kube-apiserver: credentials, one urllib3 transport, errors, deadlines.

Requests go by path (``/api/v1/namespaces/<ns>/services/<name>``) and come back as
raw bytes for kdisco's own JSON parsing, so neither the kubernetes client's
generated API classes nor its models are ever imported (importing them costs most
of a second, FACTS.md §6). In a pod the credentials are a token file, a CA file and
``KUBERNETES_SERVICE_HOST``/``_PORT``, and urllib3 is used directly: nothing of the
``kubernetes`` package is imported. With a kubeconfig, the kubernetes package's
loader builds the configuration (exec plugins, OIDC, client certificates, proxies)
and its REST layer builds the connection pool; the requests are still kdisco's.

Deadlines: urllib3's timeouts bound each ``recv()``, not a response, so a server that
trickles its headers or body would hold a caller far past its deadline. Every
request is armed with a cut-off instead: one process-wide thread (``_Reaper``) shuts
the request's socket down when the deadline passes, whether it is still waiting
for headers or reading the body. No thread per request.

A ``KubeClient`` also keeps what its connections are made of (``TlsSettings``, a
proxy, whether its headers can block), so that ``aioclient.AsyncKubeClient`` talks
to the same server in the same way; the error mapping below serves both.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import attrs
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from kdisco._deadline import Deadline
from kdisco._exceptions import (
    API_SAID,
    AccessDenied,
    ConfigurationError,
    TransientError,
    permission_words,
    rbac_rule,
)
from kdisco._forksafe import after_fork_in_child
from kdisco._validation import read_text_file

Json = dict[str, Any]
#: (verb, resource, namespace): what a request was for, as errors name it.
What = tuple[str, str, str]
Headers = Callable[[], Mapping[str, str]]

#: Smallest I/O timeout handed to urllib3 (it rejects 0).
MIN_TIMEOUT = 0.01


# -- cut-offs ---------------------------------------------------------------------------


class Cutoff:
    """One request's cut-off: shuts its connection's socket when fired.

    The socket is remembered as well as the connection: ``http.client`` drops the
    connection's reference (``conn.sock = None``) once a response will close the
    connection, while the response goes on reading from the same socket.
    """

    __slots__ = ("_conn", "_fired", "_lock", "_sock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: HTTPConnection | None = None
        self._sock: socket.socket | None = None
        self._fired = False

    @property
    def fired(self) -> bool:
        return self._fired

    def attach(self, conn: HTTPConnection) -> None:
        with self._lock:
            self._conn = conn
            sock = conn.sock
            if sock is not None:
                self._sock = sock
            fired = self._fired
        if fired:
            self._shut()

    def fire(self) -> None:
        """Cut the request now (its reader gets an error at once)."""
        with self._lock:
            self._fired = True
        self._shut()

    def _shut(self) -> None:
        with self._lock:
            conn, sock = self._conn, self._sock
        if conn is not None and conn.sock is not None:
            sock = conn.sock
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed
            sock.shutdown(socket.SHUT_RDWR)


class _Reaper:
    """The one thread that fires every armed cut-off whose time has come."""

    def __init__(self) -> None:
        self._lock = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._live: dict[int, Cutoff] = {}
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        after_fork_in_child(self._after_fork)

    def _after_fork(self) -> None:
        # Threads do not survive fork(): a child starts its own on its first request.
        self._lock = threading.Condition(threading.Lock())
        self._heap = []
        self._live = {}
        self._thread = None

    def arm(self, seconds: float, cutoff: Cutoff) -> int:
        at = time.monotonic() + seconds
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kdisco-cutoff", daemon=True)
                self._thread.start()
            ticket = next(self._ids)
            self._live[ticket] = cutoff
            heapq.heappush(self._heap, (at, ticket))
            if self._heap[0][1] == ticket:
                self._lock.notify()
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._live):
                # Mostly disarmed entries: drop them rather than wait for their time.
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)
            return ticket

    def disarm(self, ticket: int) -> None:
        with self._lock:
            self._live.pop(ticket, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                while True:
                    while self._heap and self._heap[0][1] not in self._live:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._lock.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, ticket = heapq.heappop(self._heap)
                        due = self._live.pop(ticket)
                        break
                    self._lock.wait(wait)
            due.fire()


_reaper = _Reaper()
_current = threading.local()


@contextmanager
def cutoff_after(seconds: float, cutoff: Cutoff | None = None) -> Iterator[Cutoff]:
    """Requests made in this thread inside the block are cut ``seconds`` from now.

    Pass a ``cutoff`` to keep a handle that another thread may ``fire()`` early
    (stopping a watch); ``math.inf`` arms nothing but still attaches.
    """
    slot = cutoff if cutoff is not None else Cutoff()
    previous = getattr(_current, "slot", None)
    _current.slot = slot
    ticket = _reaper.arm(seconds, slot) if seconds < 1e9 else None
    try:
        yield slot
    finally:
        _current.slot = previous
        if ticket is not None:
            _reaper.disarm(ticket)


class _Attaching:
    """Mixed into urllib3's connections: hand the connection (and its socket, once
    connected) to the cut-off armed in this thread."""

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        slot: Cutoff | None = getattr(_current, "slot", None)
        if slot is not None:
            slot.attach(self)  # type: ignore[arg-type]

    def request(self, *args: Any, **kwargs: Any) -> Any:
        slot: Cutoff | None = getattr(_current, "slot", None)
        if slot is not None:
            slot.attach(self)  # type: ignore[arg-type]
        return super().request(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Attaching, HTTPConnection):
    pass


class _HTTPSConnection(_Attaching, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


#: Idle connections kept to the API server. The watch cache holds two connections per
#: namespace open while direct reads run beside them; with urllib3's default of one,
#: every connection past the first was closed after its request (a new TLS handshake
#: next time, and a "Connection pool is full" warning). A kubeconfig's pool is sized
#: by the kubernetes package (its ``connection_pool_maxsize``).
POOL_SIZE = 8


def _with_cutoffs(pool: urllib3.PoolManager) -> urllib3.PoolManager:
    pool.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return pool


# -- credentials --------------------------------------------------------------------------


class TokenFile:
    """A bearer token file re-read whenever it changes on disk.

    Bound service-account tokens expire and the kubelet rotates the file; re-reading
    on change (one stat per request) avoids the 401s that a cached token causes.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._token = ""

    def current(self) -> str:
        try:
            st = self._path.stat()
        except OSError as exc:
            raise ConfigurationError(f"cannot read token file {self._path}: {exc}") from exc
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if stamp != self._stamp:
                token = (read_text_file(self._path, "token file") or "").strip()
                if not token:
                    raise ConfigurationError(f"token file {self._path} is empty")
                self._token, self._stamp = token, stamp
            return self._token


@attrs.frozen(kw_only=True)
class TlsSettings:
    """How connections to an https API server are verified and authenticated: the
    material the sync pool was given, kept so the asyncio client can use the same."""

    ca_file: str | None = None
    ca_data: str | bytes | None = None
    cert_file: str | None = None
    key_file: str | None = None
    verify: bool = True
    #: False when a kubeconfig turns hostname checking off (``assert_hostname``).
    check_hostname: bool = True
    #: The name the server's certificate is checked against, and sent as SNI, when it
    #: is not the URL's host (a kubeconfig's ``tls-server-name``).
    server_name: str | None = None

    def context(self) -> ssl.SSLContext:
        """An SSLContext as urllib3 builds one for these settings. Reads files (and
        may load the system's CAs): call it off the event loop."""
        from urllib3.util.ssl_ import create_urllib3_context

        context = create_urllib3_context(
            cert_reqs=ssl.CERT_REQUIRED if self.verify else ssl.CERT_NONE
        )
        if not (self.verify and self.check_hostname):
            context.check_hostname = False
        if self.ca_file or self.ca_data:
            context.load_verify_locations(cafile=self.ca_file, cadata=self.ca_data)
        elif self.verify:
            context.load_default_certs()
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class KubeClient:
    """One API server: its base URL, a connection pool, and how to authenticate."""

    def __init__(
        self,
        base_url: str,
        pool: urllib3.PoolManager,
        headers: Headers | None = None,
        *,
        describe: str = "",
        tls: TlsSettings | None = None,
        proxy: str | None = None,
        proxy_headers: Mapping[str, str] | None = None,
        headers_may_block: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._pool = _with_cutoffs(pool)
        self._headers = headers
        self.describe = describe or self.base_url
        #: What the pool verifies https connections with (urllib3's defaults if None).
        self.tls = tls if tls is not None else TlsSettings()
        #: The proxy the pool goes through (a kubeconfig's proxy-url, or the
        #: environment's proxy variables as the kubernetes package reads them).
        self.proxy = proxy
        self.proxy_headers = proxy_headers
        #: Whether computing the headers can block: a kubeconfig's token can be
        #: refreshed by its exec plugin or auth provider inside ``headers()``.
        self.headers_may_block = headers_may_block
        self._ssl_lock = threading.Lock()
        self._ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        return f"KubeClient({self.describe})"

    @classmethod
    def for_url(cls, url: str) -> KubeClient:
        """An unauthenticated client for ``url`` (a test server on 127.0.0.1)."""
        return cls(url, urllib3.PoolManager(retries=False, maxsize=POOL_SIZE), describe=url)

    @classmethod
    def in_cluster(cls, serviceaccount_dir: Path, environ: Mapping[str, str]) -> KubeClient:
        """The pod's own credentials: urllib3 only, no kubernetes package."""
        host = environ["KUBERNETES_SERVICE_HOST"]
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        if ":" in host:
            host = f"[{host}]"
        ca = serviceaccount_dir / "ca.crt"
        if not ca.is_file():
            raise ConfigurationError(f"in-cluster credentials: {ca} is missing")
        token = TokenFile(serviceaccount_dir / "token")
        token.current()  # a missing or empty token is a configuration error, said now

        def headers() -> Mapping[str, str]:
            return {"Authorization": f"Bearer {token.current()}"}

        # kdisco retries with its own backoff inside the caller's deadline; urllib3's
        # own retries would spend that deadline invisibly.
        pool = urllib3.PoolManager(
            cert_reqs="CERT_REQUIRED", ca_certs=str(ca), retries=False, maxsize=POOL_SIZE
        )
        return cls(
            f"https://{host}:{port}",
            pool,
            headers,
            describe="in-cluster",
            tls=TlsSettings(ca_file=str(ca)),
        )

    @classmethod
    def from_kubeconfig(cls, paths: Sequence[str], context: str | None) -> KubeClient:
        """Credentials from kubeconfig files, through the kubernetes package's loader."""
        from kubernetes.client import rest
        from kubernetes.client.configuration import Configuration
        from kubernetes.config import kube_config

        joined = os.pathsep.join(paths)
        cfg = Configuration()
        try:
            # Passing client_configuration keeps the client's global default untouched.
            kube_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=joined,
                context=context,
                client_configuration=cfg,
                persist_config=False,
            )
        except Exception as exc:
            # The loader's text can quote a whole users entry: the message is redacted
            # (as every message is), and the original exception is not chained, so no
            # traceback prints it either.
            raise ConfigurationError(
                f"cannot load kubeconfig {joined!r}: {type(exc).__name__}: {exc}"
            ) from None
        cfg.retries = False
        pool = rest.RESTClientObject(cfg).pool_manager
        # What RESTClientObject just built the pool from, for the asyncio client.
        tls = TlsSettings(
            ca_file=cfg.ssl_ca_cert,
            ca_data=cfg.ca_cert_data,
            cert_file=cfg.cert_file,
            key_file=cfg.key_file,
            verify=bool(cfg.verify_ssl),
            check_hostname=cfg.assert_hostname is not False,
            server_name=cfg.tls_server_name or None,
        )
        proxied = bool(cfg.proxy) and not rest.should_bypass_proxies(cfg.host, cfg.no_proxy or "")

        def headers() -> Mapping[str, str]:
            found: dict[str, str] = {}
            settings: Mapping[str, Any] = dict(cfg.auth_settings())
            for setting in settings.values():
                if setting.get("in") == "header" and setting.get("value"):
                    found[setting["key"]] = setting["value"]
            return found

        where = f"kubeconfig {joined}" + (f" context {context}" if context else "")
        if str(cfg.host).startswith("http://") and headers():
            _warn_plain_http(where, str(cfg.host))
        return cls(
            cfg.host,
            pool,
            headers,
            describe=where,
            tls=tls,
            proxy=cfg.proxy if proxied else None,
            proxy_headers=cfg.proxy_headers if proxied else None,
            # The loader installs this hook for token users; it re-runs an exec plugin
            # (or an auth provider's refresh) once the token has expired.
            headers_may_block=cfg.refresh_api_key_hook is not None,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """``tls.context()``, built once (the asyncio client's; the sync pool makes its
        own). Blocking: call it off the event loop."""
        with self._ssl_lock:
            if self._ssl_context is None:
                self._ssl_context = self.tls.context()
            return self._ssl_context

    def close(self) -> None:
        """Close every pooled connection now. (``PoolManager.clear()`` only forgets
        the pools: their sockets would stay open for as long as anything, a kept
        exception say, still refers to a pool.)"""
        pools = self._pool.pools
        for key in list(pools.keys()):
            with contextlib.suppress(KeyError):
                pools[key].close()
        self._pool.clear()

    # -- requests ----------------------------------------------------------------------

    def open(
        self,
        path: str,
        query: Sequence[tuple[str, str]] = (),
        *,
        connect_timeout: float,
        read_timeout: float,
        method: str = "GET",
        body: bytes | None = None,
    ) -> Any:
        """GET ``path`` (or send ``body`` with ``method``) and return the urllib3
        response with its body unread.

        The caller reads (or streams) the body and must ``release_conn()`` it. Call it
        inside ``cutoff_after`` to bound it in total.
        """
        headers = self.request_headers()
        if body is not None:
            headers["Content-Type"] = "application/json"
        return self._pool.request(
            method,
            self.url(path, query),
            headers=headers,
            body=body,
            preload_content=False,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(
                connect=max(MIN_TIMEOUT, connect_timeout), read=max(MIN_TIMEOUT, read_timeout)
            ),
        )

    def url(self, path: str, query: Sequence[tuple[str, str]] = ()) -> str:
        return self.base_url + path + ("?" + urlencode(query) if query else "")

    def request_headers(self) -> dict[str, str]:
        """Every request's headers, credentials included (see ``headers_may_block``)."""
        headers = {"Accept": "application/json"}
        if self._headers is not None:
            headers.update(self._headers())
        return headers

    def get_json(
        self, path: str, query: Sequence[tuple[str, str]], deadline: Deadline, what: What
    ) -> Json | None:
        """One GET, parsed, all of it within ``deadline``. None for 404.

        Raises ``AccessDenied`` (401/403) or ``TransientError`` (anything else that
        went wrong, retried by the chain).
        """
        body = self.get_body(path, query, deadline, what)
        return None if body is None else parse_object(body, what)

    def get_body(
        self, path: str, query: Sequence[tuple[str, str]], deadline: Deadline, what: What
    ) -> bytes | None:
        """``get_json`` before the parsing: the body of a 2xx response."""
        return self._exchange("GET", path, query, None, deadline, what)

    def post_json(self, path: str, obj: Json, deadline: Deadline, what: What) -> Json | None:
        """One POST of ``obj`` as JSON (a ``SelfSubjectAccessReview``, say), its
        response parsed, all of it within ``deadline``. None for 404.

        Raises as ``get_json`` does.
        """
        body = self._exchange("POST", path, (), json.dumps(obj).encode(), deadline, what)
        return None if body is None else parse_object(body, what)

    def _exchange(
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        payload: bytes | None,
        deadline: Deadline,
        what: What,
    ) -> bytes | None:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise no_time_left(what)
        with cutoff_after(remaining) as cut:
            try:
                response = self.open(
                    path,
                    query,
                    connect_timeout=remaining,
                    read_timeout=remaining,
                    method=method,
                    body=payload,
                )
                try:
                    body: bytes = response.data
                finally:
                    response.release_conn()
            except (ConfigurationError, AccessDenied):
                raise
            except Exception as exc:
                if cut.fired:
                    raise deadline_passed(what) from exc
                raise request_failed(what, exc) from exc
        if cut.fired or deadline.expired():
            raise deadline_passed(what)
        if raise_for_status(response.status, body, what):
            return None
        return body


_plain_http_warned: set[str] = set()


def _warn_plain_http(where: str, host: str) -> None:
    """Once per server: credentials are about to travel unencrypted (kdisco never sends
    in-cluster tokens over plain HTTP; a kubeconfig can ask it to)."""
    if host in _plain_http_warned:
        return
    _plain_http_warned.add(host)
    import logging

    logging.getLogger("kdisco").warning(
        "kdisco: %s points at plain %s: its credentials travel unencrypted; use https",
        where,
        host,
    )


def pages(fetch: Callable[[str | None], Json | None]) -> Iterator[Json]:
    """A paginated LIST: ``fetch(continue_token)`` for each page until none is left.

    ``fetch`` returns None for a 404, which ends the list.
    """
    token: str | None = None
    while True:
        page = fetch(token)
        if page is None:
            return
        yield page
        token = continue_token(page)
        if token is None:
            return


def continue_token(page: Json) -> str | None:
    """The token that asks for the page after ``page``; None when it was the last.
    (The paging rule, sans I/O: ``pages`` and the direct reads of the ``api``
    strategy, sync and async, all follow it.)"""
    meta = page.get("metadata")
    token = meta.get("continue") if isinstance(meta, dict) else None
    return token if token and isinstance(token, str) else None


# -- errors -----------------------------------------------------------------------------


def no_time_left(what: What) -> TransientError:
    return TransientError(f"no time left to {what[0]} {what[1]}")


def deadline_passed(what: What) -> TransientError:
    """The request was cut off (headers or body still coming) when the deadline passed."""
    return TransientError(f"{what[0]} {what[1]}: no complete response before the deadline")


def request_failed(what: What, exc: BaseException) -> TransientError:
    # Connection refused/reset, timeouts, TLS handshakes cut short.
    return TransientError(f"{what[0]} {what[1]}: {type(exc).__name__}: {exc}")


def parse_object(body: bytes, what: What) -> Json:
    """A 2xx body as a JSON object; TransientError when it is not one."""
    try:
        parsed = json.loads(body)
    except ValueError as exc:
        raise not_json(what, exc) from exc
    if not isinstance(parsed, dict):
        raise TransientError(f"{what[0]} {what[1]}: response is not a JSON object")
    return parsed


def not_json(what: What, exc: ValueError) -> TransientError:
    return TransientError(f"{what[0]} {what[1]}: response is not JSON: {exc}")


def parse_list(body: bytes, what: What) -> Generator[None, None, Json]:
    """``parse_object`` for a LIST response, in steps (``loads_in_steps``)."""
    try:
        parsed = yield from loads_in_steps(body)
    except ValueError as exc:
        raise not_json(what, exc) from exc
    if not isinstance(parsed, dict):
        raise TransientError(f"{what[0]} {what[1]}: response is not a JSON object")
    return parsed


_decode = json.JSONDecoder().raw_decode
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON space."""
    found = _SPACE.match(text, i)
    assert found is not None  # (``*``: it always matches)
    return found.end()


def loads_in_steps(body: bytes) -> Generator[None, None, Any]:
    """``json.loads(body)`` one list item at a time: it pauses (yields None) after
    each of a top-level object's ``items``. ``objects.finish`` runs it through.

    One ``json.loads`` of a big LIST response is one C call: 2 MB (100 EndpointSlices
    of 100 endpoints) hold the GIL for ~30 ms, and every other thread, an event
    loop's included, stops that long. Item by item, the GIL can pass between items
    (an informer thread), and an asyncio caller lets the loop run at each pause. The
    result, and every error, is json.loads' own: values are parsed by its decoder;
    only the object and list around the items are walked here.
    """
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    i = _skip(text, 0)
    if text[i : i + 1] != "{":
        value, i = _decode(text, i)
        return _end(text, value, i)
    obj: Json = {}
    i = _skip(text, i + 1)
    if text[i : i + 1] == "}":
        return _end(text, obj, i + 1)
    while True:
        if text[i : i + 1] != '"':
            raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, i)
        key, i = _decode(text, i)
        i = _skip(text, i)
        if text[i : i + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
        i = _skip(text, i + 1)
        if key == "items" and text[i : i + 1] == "[":
            items: list[Any] = []
            i = _skip(text, i + 1)
            if text[i : i + 1] == "]":
                i += 1
            else:
                while True:
                    item, i = _decode(text, i)
                    items.append(item)
                    yield
                    i = _skip(text, i)
                    if text[i : i + 1] == "]":
                        i += 1
                        break
                    if text[i : i + 1] != ",":
                        raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
                    i = _skip(text, i + 1)
            obj[key] = items
        else:
            obj[key], i = _decode(text, i)
        i = _skip(text, i)
        if text[i : i + 1] == "}":
            return _end(text, obj, i + 1)
        if text[i : i + 1] != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
        i = _skip(text, i + 1)


def _end(text: str, value: Any, i: int) -> Any:
    i = _skip(text, i)
    if i != len(text):
        raise json.JSONDecodeError("Extra data", text, i)
    return value


def raise_for_status(status: int, body: bytes, what: What) -> bool:
    """Nothing for 2xx, True for 404; raises AccessDenied or TransientError otherwise."""
    if 200 <= status < 300:
        return False
    if status == 404:
        return True
    verb, resource, namespace = what
    message = status_message(body)
    if status in (401, 403):
        if status == 401:
            text = (
                f"the API rejected the credentials (401 Unauthorized) for {verb} {resource} "
                f"in namespace {namespace!r}: {message}"
            )
        else:
            needs = permission_words(verb, resource, namespace)
            rule = rbac_rule(verb, resource)
            if namespace:
                text = f"forbidden: needs {needs} (a Role rule: {rule}){API_SAID}{message}"
            else:  # a cluster-scoped resource (nodes): a Role cannot grant it
                text = (
                    f"forbidden: needs {needs} (a ClusterRole rule: {rule}, bound with a "
                    f"ClusterRoleBinding){API_SAID}{message}"
                )
        raise AccessDenied(text, verb=verb, resource=resource, namespace=namespace, status=status)
    if status == 429 or status >= 500:
        raise TransientError(f"{verb} {resource} in {namespace!r}: HTTP {status}: {message}")
    raise TransientError(f"{verb} {resource} in {namespace!r}: unexpected HTTP {status}: {message}")


def status_message(body: bytes) -> str:
    """The ``message`` of a Kubernetes Status body, else the start of the body."""
    try:
        status = json.loads(body)
    except (TypeError, ValueError):
        return body[:300].decode("utf-8", "replace")
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])[:1000]
    return body[:300].decode("utf-8", "replace")
