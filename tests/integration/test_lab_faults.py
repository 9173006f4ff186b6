"""Faults injected into a real lab while threads keep calling ``discover()``.

Each test runs four threads that call ``discover()`` in a loop (bounded in count and
time) on one ``Discoverer`` with the default watch cache and a 1 s deadline, injects
one fault, clears it, and then asserts on every call made:

- no wrong answer: each answer's endpoint set is one the test wrote, before the call
  returned (the truth is recorded as it is written);
- a stale answer says so (``stale`` with the failed refresh in ``attempts``) and is
  never older than ``CachePolicy.max_stale``;
- every call returns within its deadline plus ``MARGIN``; none hangs;
- the Discoverer recovers: a fresh answer showing a change made after the fault
  cleared, within the fault's bound (and the watch cache syncs again where it should);
- ``close()`` leaves no kdisco thread and no file descriptor behind.

The faults run on a private lab (the apiserver's watch cache off, as in
test_watch_lab.py, so etcd compaction reaches watchers; CoreDNS TTL 1 s), so
stopping and restarting its servers disturbs no other test. Writes go through the
stdlib client of ``lab.kube`` (one connection per request, closed after it), so the
descriptor count sees kdisco's sockets only. With ``KDISCO_FAULT_FIGURES=<path>`` the
figures of each fault are written there as JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

import kdisco
from kdisco import CachePolicy
from kdisco._strategies.api import ApiStrategy
from lab import kube

from .conftest import private_lab

#: Threads calling discover() during each fault.
THREADS = 4
#: Every discover()'s deadline.
TIMEOUT = 1.0
#: Scheduling slack over the deadline: 2 cores shared with a restarting lab.
MARGIN = 0.25
#: Pause between one thread's calls (keeps the GIL available to the fault injector).
PAUSE = 0.002
#: How far an answer's age, read just after the call returned, may lag the call.
AGE_SLACK = MARGIN
#: A fresh (not stale) answer shows a set that was current at most this long before
#: the call began: DNS answers are kept for their TTL (1 s), watch events take ms.
FRESH_LAG = 2.0
#: Hard bounds of every load loop: whatever happens, it stops by itself.
LOAD_SECONDS = 25.0
LOAD_CALLS = 200_000
#: CoreDNS TTL in the private lab. With CoreDNS down, the first refresh fails one
#: deadline after the answer expired, so the first stale answer is TTL + TIMEOUT = 2 s
#: old; a max_stale of 2.5 s leaves stale answers to serve, then errors.
DNS_TTL = 1
DNS_MAX_STALE = 2.5
#: How long each fault is held (when holding is up to the test).
DNS_DOWN = 4.5
RBAC_REVOKED = 1.5
#: Recovery bounds, from the moment the fault is cleared to the first fresh answer
#: that shows a change written after it.
RECOVERY = {
    "coredns": 5.0,  # TTL + min_ttl (stale answers are re-asked after 1 s) + propagation
    "apiserver": 5.0,
    "compaction": 3.0,
    "token": 3.0,
    "rbac": 3.0,
}
#: The watch cache syncs again within this after the fault cleared: backoff_initial
#: doubling over a few seconds of outage, well under backoff_max (30 s).
RESYNC = 10.0

SLICE = "db-a"
ROLE_RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]

FIGURES: dict[str, dict[str, Any]] = {}


# -- the private lab -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fault_lab() -> Iterator[Any]:
    with private_lab(watch_cache=False, dns_ttl=DNS_TTL) as info:
        yield info


@pytest.fixture(scope="module", autouse=True)
def _write_figures() -> Iterator[None]:
    yield
    path = os.environ.get("KDISCO_FAULT_FIGURES")
    if path:
        Path(path).write_text(json.dumps(FIGURES, indent=2, sort_keys=True) + "\n")


# -- the truth, written through the lab's stdlib client ---------------------------------


def _eps(hosts: frozenset[str]) -> list[dict[str, Any]]:
    return [{"addresses": [h], "conditions": {"ready": True}} for h in sorted(hosts)]


class Truth:
    """The endpoint sets written to the Service's one slice, and when.

    The slice is hand-written, not the EndpointSlice controller's: each change swaps
    the whole set in one write, so "an answer that was never written" is exact. From
    Pods the controller would pass through sets in between (new Pods added before old
    ones go), each one a real state that the checks would have to allow.
    """

    def __init__(self, info: Any, prefix: str) -> None:
        self.info = info
        self.ns = f"{prefix}-{os.urandom(4).hex()}"
        self.written: list[tuple[float, frozenset[str]]] = []
        self._serial = 0
        kube.request(info, "POST", "/api/v1/namespaces", {"metadata": {"name": self.ns}})
        kube.request(
            info,
            "POST",
            f"/api/v1/namespaces/{self.ns}/services",
            {
                "metadata": {"name": "db"},
                "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
            },
        )
        first = self.next_set()
        self.written.append((time.monotonic(), first))
        kube.request(
            info,
            "POST",
            f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices",
            {
                "metadata": {
                    "name": SLICE,
                    "labels": {
                        "kubernetes.io/service-name": "db",
                        "endpointslice.kubernetes.io/managed-by": "kdisco-lab",
                    },
                },
                "addressType": "IPv4",
                "endpoints": _eps(first),
                "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            },
        )

    def next_set(self) -> frozenset[str]:
        # TEST-NET-1, data only. Consecutive sets are disjoint, so an answer that mixed
        # two of them would match none.
        self._serial += 1
        n = 1 + self._serial % 3
        return frozenset(f"192.0.2.{(self._serial * 7 + i) % 250 + 1}" for i in range(n))

    def change(self) -> tuple[float, frozenset[str]]:
        """Write a new endpoint set; returns when it was sent and the set."""
        hosts = self.next_set()
        at = time.monotonic()
        # Recorded before it is sent: an answer may show it the moment it lands.
        self.written.append((at, hosts))
        kube.request(
            self.info,
            "PATCH",
            f"/apis/discovery.k8s.io/v1/namespaces/{self.ns}/endpointslices/{SLICE}",
            [{"op": "replace", "path": "/endpoints", "value": _eps(hosts)}],
            content_type="application/json-patch+json",
        )
        return at, hosts

    @property
    def current(self) -> frozenset[str]:
        return self.written[-1][1]

    def existed_by(self, hosts: frozenset[str], t: float) -> bool:
        return any(s == hosts and at <= t for at, s in self.written)

    def superseded_at(self, hosts: frozenset[str]) -> float:
        """When the next set replaced ``hosts`` (inf while it is the current one)."""
        for (_, s), (at, _) in zip(self.written, self.written[1:], strict=False):
            if s == hosts:
                return at
        return math.inf

    def delete(self) -> None:
        # The lab's namespace controller deletes what the namespace holds.
        kube.request(self.info, "DELETE", f"/api/v1/namespaces/{self.ns}", ok_statuses=(404,))


# -- in-cluster credentials, laid out and rotated the way the kubelet does it --------


class Credentials:
    """A ServiceAccount with a Role, and a projected-volume directory of its token.

    Tokens are bound to a Secret, so deleting the Secret retires a token (after the
    apiserver's 10 s cache of good tokens) as expiry would.
    """

    def __init__(self, info: Any, ns: str, dest: Path) -> None:
        self.info, self.ns, self.dir = info, ns, dest
        self._serial = 0
        self.secret = ""
        rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
        kube.request(
            info, "POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "app"}}
        )
        kube.request(
            info, "POST", f"{rbac}/roles", {"metadata": {"name": "app"}, "rules": ROLE_RULES}
        )
        self.bind()
        dest.mkdir()
        self.token = ""
        self.rotate()

    def bind(self) -> None:
        kube.request(
            self.info,
            "POST",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.ns}/rolebindings",
            {
                "metadata": {"name": "app"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app"},
                "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": self.ns}],
            },
        )

    def unbind(self) -> None:
        kube.request(
            self.info,
            "DELETE",
            f"/apis/rbac.authorization.k8s.io/v1/namespaces/{self.ns}/rolebindings/app",
        )

    def rotate(self) -> str:
        """A new token (bound to a new Secret), swapped in atomically as ``..data``."""
        self._serial += 1
        secret = f"app-token-{self._serial}"
        created = kube.request(
            self.info,
            "POST",
            f"/api/v1/namespaces/{self.ns}/secrets",
            {"metadata": {"name": secret}},
        )
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": 3600,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "name": secret,
                    "uid": created["metadata"]["uid"],
                },
            },
        }
        token: str = kube.request(
            self.info,
            "POST",
            f"/api/v1/namespaces/{self.ns}/serviceaccounts/app/token",
            request,
        )["status"]["token"]
        data = self.dir / f"..{self._serial:04d}"
        data.mkdir()
        (data / "token").write_text(token)
        (data / "ca.crt").write_bytes(Path(self.info.ca_path).read_bytes())
        (data / "namespace").write_text(self.ns)
        link = self.dir / "..data_tmp"
        link.symlink_to(data.name)
        os.replace(link, self.dir / "..data")
        for name in ("token", "ca.crt", "namespace"):
            if not (self.dir / name).is_symlink():
                (self.dir / name).symlink_to(f"..data/{name}")
        self.secret, self.token = secret, token
        return token

    def retire(self, secret: str) -> None:
        kube.request(self.info, "DELETE", f"/api/v1/namespaces/{self.ns}/secrets/{secret}")

    def accepted(self, token: str) -> bool:
        reply = kube.request(
            self.info,
            "GET",
            f"/api/v1/namespaces/{self.ns}/services/db",
            token=token,
            ok_statuses=(401,),
        )
        return bool(reply.get("kind") == "Service")

    def environ(self) -> dict[str, str]:
        return {
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(urlsplit(self.info.apiserver_url).port),
            "KDISCO_SERVICEACCOUNT_DIR": str(self.dir),
        }


# -- load ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    start: float
    end: float
    hosts: frozenset[str] | None = None
    stale: bool = False
    age: float = 0.0
    reasons: tuple[str, ...] = ()
    error: BaseException | None = None

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Load:
    """``THREADS`` threads calling ``d.discover(name)`` until stopped (or the caps)."""

    d: kdisco.Discoverer
    name: str = "db"
    calls: list[Call] = field(default_factory=list)
    hung: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"fault-load-{i}", daemon=True)
            for i in range(THREADS)
        ]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(TIMEOUT + MARGIN + 2.0)
        self.hung = sum(t.is_alive() for t in self._threads)

    def _run(self) -> None:
        until = time.monotonic() + LOAD_SECONDS
        for _ in range(LOAD_CALLS // THREADS):
            if self._stop.is_set() or time.monotonic() > until:
                return
            start = time.monotonic()
            try:
                res = self.d.discover(self.name)
            except Exception as exc:  # every outcome is recorded and judged afterwards
                # Kept without its traceback, whose frames would keep sockets alive.
                call = Call(start, time.monotonic(), error=_bare(exc))
            else:
                call = Call(
                    start,
                    time.monotonic(),
                    hosts=frozenset(ep.host for ep in res),
                    stale=res.stale,
                    age=res.age,
                    reasons=tuple(a.reason for a in res.attempts),
                )
            with self._lock:
                self.calls.append(call)
            self._stop.wait(PAUSE)

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def wait_for(self, pred: Callable[[Call], bool], timeout: float) -> Call | None:
        """The first call (by end time) that matches, waiting up to ``timeout``."""
        until = time.monotonic() + timeout
        while True:
            found = [c for c in self.snapshot() if pred(c)]
            if found:
                return min(found, key=lambda c: c.end)
            if time.monotonic() > until:
                return None
            time.sleep(0.02)


# -- measuring and judging ---------------------------------------------------------------


def _bare(exc: BaseException) -> BaseException:
    """``exc`` without tracebacks (its chain too): their frames would keep the sockets
    of failed requests open for as long as the test keeps the error."""
    seen: BaseException | None = exc
    while seen is not None:
        seen.__traceback__ = None
        seen = seen.__cause__ or seen.__context__
    return exc


def kdisco_threads() -> int:
    return sum(
        1
        for t in threading.enumerate()
        if t.name.startswith("kdisco") and t.name != "kdisco-cutoff"
    )


def open_fds() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory's own descriptor, closed by now
            continue
    return out


def _describe_fd(target: str) -> str:
    """A descriptor's target, and for a TCP socket its two ends (from /proc/net/tcp)."""
    if not target.startswith("socket:["):
        return target
    inode = target[len("socket:[") : -1]
    for table in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[9] == inode:
                local, remote = (int(c.rsplit(":", 1)[1], 16) for c in cols[1:3])
                return f"{target} tcp :{local} -> :{remote} state {cols[3]}"
    return target


@dataclass
class Before:
    threads: int = field(default_factory=kdisco_threads)
    fds: dict[int, str] = field(default_factory=open_fds)
    new_fds: list[str] = field(default_factory=list)

    def leaked(self) -> tuple[int, int]:
        """(threads, fds) still above the baseline, given a moment to settle."""
        until = time.monotonic() + 3.0
        while True:
            now = open_fds()
            threads, fds = kdisco_threads() - self.threads, len(now) - len(self.fds)
            if (threads <= 0 and fds <= 0) or time.monotonic() > until:
                self.new_fds = [now[fd] for fd in sorted(set(now) - set(self.fds))]
                return max(0, threads), max(0, fds)
            time.sleep(0.05)


def namespace_cache(d: kdisco.Discoverer, ns: str) -> Any:
    strategy = next(s for s in d.strategies if isinstance(s, ApiStrategy))
    assert strategy.watch_cache is not None
    cache = strategy.watch_cache.namespace(ns)
    assert cache is not None
    return cache


def reconnect(d: kdisco.Discoverer, ns: str) -> None:
    """Cut both informers' requests, as a watch timing out or a dropped connection would:
    they re-open (and re-authenticate) at once."""
    for informer in namespace_cache(d, ns).threads:
        informer.reconnect()


def wait_synced(d: kdisco.Discoverer, ns: str, since: float, timeout: float) -> float | None:
    """Seconds from ``since`` until the watch cache is synced (None: not within timeout)."""
    cache = namespace_cache(d, ns)
    until = time.monotonic() + timeout
    while time.monotonic() <= until:
        if cache.synced:
            return time.monotonic() - since
        time.sleep(0.02)
    return None


def wait_answer(d: kdisco.Discoverer, hosts: frozenset[str], timeout: float = 15.0) -> None:
    until = time.monotonic() + timeout
    while True:
        try:
            got = frozenset(ep.host for ep in d.discover("db"))
            if got == hosts:
                return
        except kdisco.DiscoveryError:
            pass
        assert time.monotonic() < until, f"never saw {sorted(hosts)}"
        time.sleep(0.05)


@dataclass
class Fault:
    """One fault's timeline and results."""

    name: str
    truth: Truth
    max_stale: float
    injected: float = 0.0
    cleared: float = 0.0
    load: Load | None = None
    recovered: Call | None = None
    resync: float | None = None
    leaked: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)
    #: Counted when the fault is set up, before its Discoverer exists.
    before: Before = field(default_factory=Before)

    def check_leaks(self) -> None:
        self.leaked = self.before.leaked()

    def recover(self, load: Load) -> None:
        """Write a change after the fault cleared and wait for a fresh answer showing it."""
        at, hosts = self.truth.change()
        self.recovered = load.wait_for(
            lambda c: c.hosts == hosts and not c.stale and c.start >= at,
            RECOVERY[self.name] + 1.0,
        )

    def calls(self) -> list[Call]:
        assert self.load is not None
        return self.load.calls

    def errors(self) -> Counter[str]:
        return Counter(type(c.error).__name__ for c in self.calls() if c.error is not None)

    def figures(self) -> dict[str, Any]:
        calls = self.calls()
        stale = [c for c in calls if c.stale]
        return {
            "calls": len(calls),
            "answers": sum(1 for c in calls if c.hosts is not None),
            "stale answers": len(stale),
            "oldest stale answer (s)": round(max((c.age for c in stale), default=0.0), 3),
            "errors": dict(self.errors()),
            "deadline (s)": TIMEOUT,
            "worst call (s)": round(max((c.seconds for c in calls), default=0.0), 3),
            "fault held (s)": round(self.cleared - self.injected, 2),
            "recovery (s)": (
                None if self.recovered is None else round(self.recovered.end - self.cleared, 3)
            ),
            "recovery bound (s)": RECOVERY[self.name],
            "watch cache synced again after (s)": (
                None if self.resync is None else round(self.resync, 2)
            ),
            "leaked threads": self.leaked[0],
            "leaked fds": self.leaked[1],
            **self.extra,
        }

    def judge(self, allowed: Callable[[Call], bool] = lambda c: False, *more: str) -> None:
        """The checks every fault shares, reported together; ``allowed`` says which
        errors may reach callers, ``more`` adds the fault's own failed checks."""
        assert self.load is not None
        FIGURES[self.name] = self.figures()
        calls = self.calls()
        problems = list(more)
        if self.load.hung:
            problems.append(f"{self.load.hung} discover() calls never returned")
        truth = self.truth
        wrong = [c for c in calls if c.hosts is not None and not truth.existed_by(c.hosts, c.end)]
        if wrong:
            problems.append(f"answers that were never written: {wrong[:3]}")
        outdated = [
            c
            for c in calls
            if c.hosts is not None
            and not c.stale
            and truth.superseded_at(c.hosts) < c.start - FRESH_LAG
        ]
        if outdated:
            problems.append(f"outdated answers not marked stale: {outdated[:3]}")
        unlabelled = [c for c in calls if c.stale and not any(c.reasons)]
        if unlabelled:
            problems.append(f"stale answers without a reason: {unlabelled[:3]}")
        too_old = [c for c in calls if c.stale and c.age > self.max_stale + AGE_SLACK]
        if too_old:
            problems.append(
                f"{len(too_old)} stale answers older than max_stale={self.max_stale} s "
                f"(oldest {max(c.age for c in too_old):.3f} s): {too_old[:2]}"
            )
        slow = sorted(c.seconds for c in calls if c.seconds > TIMEOUT + MARGIN)
        if slow:
            problems.append(f"{len(slow)} calls past deadline + margin, worst {slow[-1]:.3f} s")
        unexpected = [c for c in calls if c.error is not None and not allowed(c)]
        if unexpected:
            problems.append(
                f"{len(unexpected)} unexpected errors: {[repr(c.error) for c in unexpected[:3]]}"
            )
        if self.recovered is None:
            problems.append(
                f"no fresh answer showing a change within {RECOVERY[self.name]} s of the "
                f"fault clearing; last calls: {calls[-3:]}"
            )
        elif self.recovered.end - self.cleared > RECOVERY[self.name]:
            problems.append(f"recovered after {self.recovered.end - self.cleared:.2f} s")
        if self.leaked != (0, 0):
            problems.append(
                f"after close(): {self.leaked} (threads, fds) leaked; new descriptors: "
                f"{[_describe_fd(t) for t in self.before.new_fds]}"
            )
        assert not problems, f"{self.name}: " + "\n".join(problems)


def api_discoverer(info: Any, ns: str, creds: Credentials | None = None) -> kdisco.Discoverer:
    if creds is not None:
        return kdisco.Discoverer(strategies=["api"], environ=creds.environ(), timeout=TIMEOUT)
    return kdisco.Discoverer(
        strategies=["api"],
        kubeconfig=str(info.kubeconfig),
        namespace=ns,
        environ={},
        timeout=TIMEOUT,
    )


# -- the faults ----------------------------------------------------------------------------


def test_coredns_stopped_then_restarted(fault_lab: Any) -> None:
    truth = Truth(fault_lab, "fault-dns")
    fault = Fault("coredns", truth, DNS_MAX_STALE)
    d = kdisco.Discoverer(
        strategies=["dns"],
        dns_server=fault_lab.dns_server,
        cluster_domain=fault_lab.cluster_domain,
        namespace=truth.ns,
        environ={},
        timeout=TIMEOUT,
        cache=CachePolicy(max_stale=DNS_MAX_STALE),
    )
    try:
        wait_answer(d, truth.current)
        with Load(d) as fault.load:
            time.sleep(0.5)
            fault.injected = time.monotonic()
            fault_lab.stop_dns()
            truth.change()  # written while nobody can see it
            time.sleep(max(0.0, fault.injected + DNS_DOWN - time.monotonic()))
            fault_lab.start_dns()
            fault.cleared = time.monotonic()
            fault.recover(fault.load)
    finally:
        d.close()
        truth.delete()
    fault.check_leaks()
    calls = fault.calls()
    # The last good answer was fetched at most a TTL (clamped to min_ttl) before the
    # fault, so it is served stale for at least max_stale - TTL; only then may errors
    # (timeouts) reach callers.
    serve_stale_until = fault.injected + DNS_MAX_STALE - max(DNS_TTL, 1.0) - 0.2
    early = [c for c in calls if c.error is not None and c.end < serve_stale_until]
    fault.extra["first error after fault (s)"] = round(
        min((c.end for c in calls if c.error is not None), default=fault.injected) - fault.injected,
        3,
    )
    fault.judge(
        lambda c: (
            isinstance(c.error, kdisco.DiscoveryTimeout | kdisco.DiscoveryUnavailable)
            and fault.injected <= c.start <= fault.cleared
            and bool(c.error.attempts)
        ),
        *([] if any(c.stale for c in calls) else ["no stale answer while CoreDNS was down"]),
        *([f"errors while a stale answer was still servable: {early[:3]}"] if early else []),
    )


def test_apiserver_killed_and_restarted(fault_lab: Any, tmp_path: Path) -> None:
    truth = Truth(fault_lab, "fault-restart")
    creds = Credentials(fault_lab, truth.ns, tmp_path / "sa")
    fault = Fault("apiserver", truth, CachePolicy().max_stale)
    d = api_discoverer(fault_lab, truth.ns, creds)
    try:
        wait_answer(d, truth.current)
        assert wait_synced(d, truth.ns, time.monotonic(), 10.0) is not None
        with Load(d) as fault.load:
            time.sleep(0.5)
            fault.injected = time.monotonic()
            fault_lab.restart_apiserver()  # SIGTERM, SIGKILL after 2 s, start, /readyz
            fault.cleared = time.monotonic()
            fault.recover(fault.load)
            fault.resync = wait_synced(d, truth.ns, fault.cleared, RESYNC)
            fault.extra["watch cache problem"] = namespace_cache(d, truth.ns).problem
    finally:
        d.close()
        truth.delete()
    fault.check_leaks()
    # While it starts, kube-apiserver answers service accounts 403 until its RBAC
    # cache is loaded: callers may hear that (an answer from the API), never a wrong set.
    fault.judge(
        lambda c: (
            isinstance(
                c.error, kdisco.DiscoveryTimeout | kdisco.DiscoveryUnavailable | kdisco.AccessDenied
            )
            and fault.injected <= c.start <= fault.cleared + 1.0
        ),
        *(
            []
            if fault.resync is not None
            else [
                f"the watch cache was still not synced {RESYNC} s after kube-apiserver was "
                f"ready again ({fault.extra['watch cache problem']}): every discover() "
                "meanwhile reads the API directly"
            ]
        ),
    )


def test_etcd_compaction(fault_lab: Any) -> None:
    truth = Truth(fault_lab, "fault-compact")
    fault = Fault("compaction", truth, CachePolicy().max_stale)
    d = api_discoverer(fault_lab, truth.ns)
    try:
        wait_answer(d, truth.current)
        assert wait_synced(d, truth.ns, time.monotonic(), 10.0) is not None
        informers = namespace_cache(d, truth.ns).threads
        with Load(d) as fault.load:
            time.sleep(0.5)
            truth.change()
            # Move etcd on with objects the informers do not watch, so compacting to
            # now leaves both resume points behind.
            for i in range(3):
                kube.request(
                    fault_lab,
                    "POST",
                    f"/api/v1/namespaces/{truth.ns}/configmaps",
                    {"metadata": {"name": f"bump-{i}"}},
                )
            lists = [i.lists for i in informers]
            fault.injected = time.monotonic()
            fault_lab.compact_etcd()
            reconnect(d, truth.ns)  # their next watch resumes from a compacted revision
            fault.cleared = time.monotonic()  # compaction is over at once: only its effect lasts
            until = fault.cleared + RESYNC
            while any(i.lists == n for i, n in zip(informers, lists, strict=True)):
                if time.monotonic() > until:
                    break
                time.sleep(0.02)
            relisted = [i.lists - n for i, n in zip(informers, lists, strict=True)]
            fault.extra["re-lists after 410 (services, endpointslices)"] = relisted
            fault.resync = wait_synced(d, truth.ns, fault.cleared, RESYNC)
            fault.recover(fault.load)
    finally:
        d.close()
        truth.delete()
    fault.check_leaks()
    fault.judge(
        lambda c: False,
        *([] if min(relisted) >= 1 else [f"no re-list after compaction: {relisted}"]),
        *([] if fault.resync is not None else [f"not synced {RESYNC} s after compaction"]),
    )


def test_serviceaccount_token_rotated(fault_lab: Any, tmp_path: Path) -> None:
    truth = Truth(fault_lab, "fault-token")
    creds = Credentials(fault_lab, truth.ns, tmp_path / "sa")
    fault = Fault("token", truth, CachePolicy().max_stale)
    d = api_discoverer(fault_lab, truth.ns, creds)
    try:
        wait_answer(d, truth.current)
        assert wait_synced(d, truth.ns, time.monotonic(), 10.0) is not None
        with Load(d) as fault.load:
            time.sleep(0.5)
            old_token, old_secret = creds.token, creds.secret
            fault.injected = time.monotonic()
            creds.rotate()  # the kubelet's atomic ..data swap
            creds.retire(old_secret)
            truth.change()
            # The apiserver caches good tokens for 10 s: wait until the old one is refused.
            until = time.monotonic() + 15.0
            while creds.accepted(old_token):
                assert time.monotonic() < until, "the retired token is still accepted"
                time.sleep(0.2)
            fault.extra["old token refused after (s)"] = round(time.monotonic() - fault.injected, 1)
            reconnect(d, truth.ns)  # new requests now: they must carry the new token
            fault.cleared = time.monotonic()
            fault.recover(fault.load)
            fault.resync = wait_synced(d, truth.ns, fault.cleared, RESYNC)
    finally:
        d.close()
        truth.delete()
    fault.check_leaks()
    fault.judge(
        lambda c: False,
        *(
            []
            if fault.resync is not None and fault.resync <= RECOVERY["token"]
            else [f"the watch cache did not sync again with the new token: {fault.resync}"]
        ),
    )


def test_rbac_revoked_then_restored(fault_lab: Any, tmp_path: Path) -> None:
    truth = Truth(fault_lab, "fault-rbac")
    creds = Credentials(fault_lab, truth.ns, tmp_path / "sa")
    fault = Fault("rbac", truth, CachePolicy().max_stale)
    d = api_discoverer(fault_lab, truth.ns, creds)
    try:
        wait_answer(d, truth.current)
        assert wait_synced(d, truth.ns, time.monotonic(), 10.0) is not None
        with Load(d) as fault.load:
            time.sleep(0.5)
            fault.injected = time.monotonic()
            creds.unbind()
            reconnect(d, truth.ns)  # open watches were authorized when they began
            denied = fault.load.wait_for(
                lambda c: isinstance(c.error, kdisco.AccessDenied) and c.start >= fault.injected,
                3.0,
            )
            truth.change()  # written while the app may not read it
            time.sleep(RBAC_REVOKED)
            creds.bind()
            fault.cleared = time.monotonic()
            fault.recover(fault.load)
    finally:
        d.close()
        truth.delete()
    fault.check_leaks()
    fault.extra["first AccessDenied after revoking (s)"] = (
        None if denied is None else round(denied.end - fault.injected, 3)
    )
    fault.judge(
        lambda c: (
            isinstance(c.error, kdisco.AccessDenied)
            and c.error.status == 403
            and fault.injected <= c.start <= fault.cleared + 1.0
        ),
        *([] if denied else ["uncached calls were not denied while the RoleBinding was gone"]),
        # A denial is an answer, not a failure to get one: nothing is served stale.
        *([] if not any(c.stale for c in fault.calls()) else ["stale answers while denied"]),
    )
