"""The API on asyncio: ``AsyncKubeClient`` (aiohttp), and how coroutines wait on
kdisco's threads without blocking the event loop.

``AsyncKubeClient`` is ``KubeClient``'s twin for one event loop. It is made from a
built ``KubeClient`` and talks to the same server the same way: base URL, TLS
(``TlsSettings``, as an SSLContext built in a worker thread), proxy, and the same
headers callable (the in-cluster token re-read when it changes). Errors are mapped
by the same functions (``raise_for_status``, ``deadline_passed``...), so a caller
cannot tell the two apart by what they raise. ``asyncio.timeout`` bounds each
request as a whole, a body trickled byte by byte included.

An aiohttp session belongs to the loop it was made on, and one Discoverer can serve
several loops (each ``asyncio.run`` makes a new one): ``LoopClients`` keeps one
client per loop, and every session is closed on its own loop, by ``aclose()`` or,
at the latest, when ``asyncio.run`` shuts the loop down.

aiohttp itself (~0.2 s of imports) is loaded in a worker thread on first use, and
only by code that makes requests: an asyncio lookup answered from the watch cache
never loads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ssl
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Sequence
from typing import TYPE_CHECKING, TypeVar

from kdisco._deadline import Deadline
from kdisco._exceptions import AccessDenied, ConfigurationError

from .client import (
    Json,
    KubeClient,
    What,
    deadline_passed,
    no_time_left,
    parse_object,
    raise_for_status,
    request_failed,
)

if TYPE_CHECKING:
    import aiohttp
    from yarl import URL

#: Takes back a callback handed to a thread-side ``Register``.
Withdraw = Callable[[], None]
#: Hands a callback to something a thread will finish (called from that thread).
Register = Callable[[Callable[[], None]], Withdraw]

# -- waiting on threads ------------------------------------------------------------------


async def wait_for_callback(register: Register, timeout: float) -> bool:
    """Wait until a thread calls back the callback given to ``register``, at most
    ``timeout`` seconds, without blocking the loop; whether it called back.

    The callback only schedules a wake-up on the loop (``call_soon_threadsafe``), so
    the thread never waits on the loop either. A cancelled or timed-out wait
    withdraws its callback: nothing is left behind.
    """
    loop = asyncio.get_running_loop()
    called: asyncio.Future[None] = loop.create_future()

    def callback() -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(_settle, called)

    withdraw = register(callback)
    try:
        await asyncio.wait((called,), timeout=max(0.0, timeout))
        return called.done() and not called.cancelled()
    finally:
        withdraw()
        called.cancel()  # (a no-op once settled)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_T = TypeVar("_T")


async def run_steps(steps: Generator[None, None, _T]) -> _T:
    """``objects.finish`` for the event loop: run a computation that pauses between
    chunks of CPU work, letting the loop run at each pause."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: _T = done.value
            return result
        await asyncio.sleep(0)


async def threads_ended(threads: Sequence[threading.Thread], timeout: float) -> bool:
    """``join`` for the event loop: poll until every thread has ended, at most
    ``timeout`` seconds in all; whether they all did."""
    end = time.monotonic() + timeout
    pause = 0.001
    while any(t.is_alive() for t in threads):
        left = end - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
    return True


# -- the client ----------------------------------------------------------------------------

_SOCKS = ("socks4", "socks4a", "socks5", "socks5h")
#: Set once aiohttp has been imported (in a worker thread) by this module.
_aiohttp_loaded = False


async def _load_aiohttp() -> None:
    global _aiohttp_loaded
    if not _aiohttp_loaded:
        # Not on the loop, which importing aiohttp would stall for ~0.2 s; in a worker
        # thread the loop runs between the import's steps (though the initialisation
        # of its C extensions still holds the GIL for tens of ms on a slow machine).
        # A flag, not sys.modules: a module another thread is still importing is
        # already in sys.modules, and importing it here would wait on its lock.
        await asyncio.to_thread(importlib.import_module, "aiohttp")
        _aiohttp_loaded = True


class AsyncKubeClient:
    """One API server for one event loop: ``KubeClient.get_json`` as a coroutine."""

    def __init__(
        self,
        source: KubeClient,
        loop: asyncio.AbstractEventLoop,
        forget: Callable[[AsyncKubeClient], None],
    ) -> None:
        #: The sync client whose server and credentials this one uses.
        self.source = source
        self.loop = loop
        self._forget = forget
        self._session: aiohttp.ClientSession | None = None
        self._keeper: AsyncGenerator[None, None] | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncKubeClient({self.source.describe})"

    async def get_json(
        self, path: str, query: Sequence[tuple[str, str]], deadline: Deadline, what: What
    ) -> Json | None:
        """``KubeClient.get_json`` on the loop: one GET, parsed, all of it within
        ``deadline``. None for 404; ``AccessDenied`` or ``TransientError`` otherwise,
        with the same texts."""
        body = await self.get_body(path, query, deadline, what)
        return None if body is None else parse_object(body, what)

    async def get_body(
        self, path: str, query: Sequence[tuple[str, str]], deadline: Deadline, what: What
    ) -> bytes | None:
        """``get_json`` before the parsing: the body of a 2xx response."""
        remaining = deadline.remaining()
        if remaining <= 0:
            raise no_time_left(what)
        timer = asyncio.timeout(remaining)
        try:
            async with timer:
                session = await self._open()
                headers = await self._headers()
                async with session.get(
                    self._url(path, query),
                    headers=headers,
                    allow_redirects=False,  # a redirect would carry the token elsewhere
                    proxy=self.source.proxy,
                    proxy_headers=self.source.proxy_headers,
                    server_hostname=self.source.tls.server_name,
                ) as response:
                    status = response.status
                    body = await response.read()
        except (ConfigurationError, AccessDenied):
            raise
        except Exception as exc:
            if timer.expired():
                raise deadline_passed(what) from exc
            raise request_failed(what, exc) from exc
        if deadline.expired():
            raise deadline_passed(what)
        if raise_for_status(status, body, what):
            return None
        return body

    def _url(self, path: str, query: Sequence[tuple[str, str]]) -> URL:
        from yarl import URL

        # Encoded by KubeClient.url, exactly as the sync client sends it.
        return URL(self.source.url(path, query), encoded=True)

    async def _headers(self) -> dict[str, str]:
        if self.source.headers_may_block:
            # A kubeconfig token past its expiry is refreshed inside the headers
            # callable, by running the exec plugin (or an auth provider's refresh):
            # that can take any time, so it runs in a worker thread. The request's
            # timeout still bounds the caller.
            return await asyncio.to_thread(self.source.request_headers)
        # In a pod: one stat of the token file (a read when the kubelet rotated it).
        return self.source.request_headers()

    async def _open(self) -> aiohttp.ClientSession:
        session = self._session
        if session is not None:
            return session
        async with self._opening:
            if self._session is None:
                session = await self._new_session()
                if self._closed:  # before or while the session was made
                    await session.close()
                    raise RuntimeError("the API client was closed")
                keeper = _close_with_loop(self)
                await keeper.asend(None)  # runs to its yield at once: no suspension
                self._session, self._keeper = session, keeper
            return self._session

    async def _new_session(self) -> aiohttp.ClientSession:
        await _load_aiohttp()
        import aiohttp

        source = self.source
        proxy = source.proxy or ""
        if proxy.partition("://")[0].lower() in _SOCKS:
            raise ConfigurationError(
                f"{source.describe}: SOCKS proxy {proxy!r}: the asyncio API client (aiohttp) "
                "speaks to HTTP proxies only; use an HTTP proxy or the sync API"
            )
        context: ssl.SSLContext | bool = True
        if source.base_url.startswith("https:"):
            # Reads the CA (and client certificate) files: in a worker thread.
            context = await asyncio.to_thread(source.ssl_context)
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context),
            # The caller's deadline bounds each request (asyncio.timeout), not aiohttp.
            timeout=aiohttp.ClientTimeout(total=None),
            # As the sync client: no proxy or .netrc from the environment (a kubeconfig's
            # proxy is passed per request), no cookies, no compressed bodies.
            trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("Accept-Encoding",),
        )

    async def aclose(self) -> None:
        """Close the session. On this client's loop only (see ``close_soon``)."""
        self._closed = True
        self._forget(self)
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            await keeper.aclose()  # its ``finally`` closes the session

    def close_soon(self) -> None:
        """Close the session on its own loop, from any thread: scheduled there if that
        loop is still open (a closed loop can close nothing; its sockets went with it)."""
        self._closed = True
        self._forget(self)
        if self.loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # closed meanwhile
            self.loop.call_soon_threadsafe(self._close_here)

    def _close_here(self) -> None:
        task = self.loop.create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _end(self) -> None:
        self._closed = True
        self._forget(self)
        session, self._session = self._session, None
        if session is not None:
            await session.close()


#: Close tasks scheduled by ``close_soon`` (the loop keeps only weak references).
_closing: set[asyncio.Task[None]] = set()


async def _close_with_loop(client: AsyncKubeClient) -> AsyncGenerator[None, None]:
    """Suspended for as long as ``client`` has a session.

    ``asyncio.run`` (and ``asyncio.Runner``) close every suspended async generator
    before they close the loop (``loop.shutdown_asyncgens()``), so a session is
    closed on its own loop even when nobody called ``aclose()``: a program (or a
    test) that runs several loops in turn leaves no connection open behind each.
    (A task could do the same, but would show in ``asyncio.all_tasks()``.)
    """
    try:
        yield
    finally:
        await client._end()


class LoopClients:
    """The ``AsyncKubeClient`` of each event loop that a strategy is used from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[asyncio.AbstractEventLoop, AsyncKubeClient] = {}

    def get(self, source: KubeClient) -> AsyncKubeClient:
        """The running loop's client for ``source``, made on first use."""
        loop = asyncio.get_running_loop()
        with self._lock:
            found = self._clients.get(loop)
            if found is not None and found.source is source:
                return found
            client = self._clients[loop] = AsyncKubeClient(source, loop, self._forget)
            # A loop closed without shutting down its async generators (not by
            # asyncio.run) never said goodbye: forget it.
            for dead in [other for other in self._clients if other.is_closed()]:
                del self._clients[dead]
        if found is not None:
            found.close_soon()  # made for a client that has been closed and rebuilt
        return client

    def _forget(self, client: AsyncKubeClient) -> None:
        with self._lock:
            if self._clients.get(client.loop) is client:
                del self._clients[client.loop]

    async def aclose(self) -> None:
        """Close the running loop's client now, and every other loop's on its loop."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        here = asyncio.get_running_loop()
        for client in clients:
            if client.loop is here:
                await client.aclose()
            else:
                client.close_soon()

    def close(self) -> None:
        """From sync code: every client is closed on its own loop."""
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            client.close_soon()
