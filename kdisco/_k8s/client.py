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
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from kdisco._deadline import Deadline
from kdisco._exceptions import AccessDenied, ConfigurationError, TransientError
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


class KubeClient:
    """One API server: its base URL, a connection pool, and how to authenticate."""

    def __init__(
        self,
        base_url: str,
        pool: urllib3.PoolManager,
        headers: Headers | None = None,
        *,
        describe: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._pool = _with_cutoffs(pool)
        self._headers = headers
        self.describe = describe or self.base_url

    def __repr__(self) -> str:
        return f"KubeClient({self.describe})"

    @classmethod
    def for_url(cls, url: str) -> KubeClient:
        """An unauthenticated client for ``url`` (a test server on 127.0.0.1)."""
        return cls(url, urllib3.PoolManager(retries=False), describe=url)

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
        pool = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(ca), retries=False)
        return cls(f"https://{host}:{port}", pool, headers, describe="in-cluster")

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
        return cls(cfg.host, pool, headers, describe=where)

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
    ) -> Any:
        """GET ``path`` and return the urllib3 response with its body unread.

        The caller reads (or streams) the body and must ``release_conn()`` it. Call it
        inside ``cutoff_after`` to bound it in total.
        """
        url = self.base_url + path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if self._headers is not None:
            headers.update(self._headers())
        return self._pool.request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(
                connect=max(MIN_TIMEOUT, connect_timeout), read=max(MIN_TIMEOUT, read_timeout)
            ),
        )

    def get_json(
        self, path: str, query: Sequence[tuple[str, str]], deadline: Deadline, what: What
    ) -> Json | None:
        """One GET, parsed, all of it within ``deadline``. None for 404.

        Raises ``AccessDenied`` (401/403) or ``TransientError`` (anything else that
        went wrong, retried by the chain).
        """
        remaining = deadline.remaining()
        if remaining <= 0:
            raise TransientError(f"no time left to {what[0]} {what[1]}")
        with cutoff_after(remaining) as cut:
            try:
                response = self.open(path, query, connect_timeout=remaining, read_timeout=remaining)
                try:
                    body = response.data
                finally:
                    response.release_conn()
            except (ConfigurationError, AccessDenied):
                raise
            except Exception as exc:
                if cut.fired:
                    raise TransientError(
                        f"{what[0]} {what[1]}: no complete response before the deadline"
                    ) from exc
                # Connection refused/reset, timeouts, TLS handshakes cut short.
                raise TransientError(f"{what[0]} {what[1]}: {type(exc).__name__}: {exc}") from exc
        if cut.fired or deadline.expired():
            raise TransientError(f"{what[0]} {what[1]}: no complete response before the deadline")
        if raise_for_status(response.status, body, what):
            return None
        try:
            parsed = json.loads(body)
        except ValueError as exc:
            raise TransientError(f"{what[0]} {what[1]}: response is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise TransientError(f"{what[0]} {what[1]}: response is not a JSON object")
        return parsed


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
        meta = page.get("metadata")
        token = meta.get("continue") if isinstance(meta, dict) else None
        if not token or not isinstance(token, str):
            return


# -- errors -----------------------------------------------------------------------------


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
            group = resource.partition(".")[2]
            text = (
                f"forbidden: needs {verb!r} on {resource!r} in namespace {namespace!r} "
                f"(a Role rule: apiGroups [{group!r}], resources "
                f"[{resource.split('.')[0]!r}], verbs [{verb!r}]); the API said: {message}"
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
