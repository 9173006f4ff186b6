"""A hostile or broken API server (127.0.0.1, started by each test): what it sends is
refused with a reason, never believed, and never costs more than its deadline.

Issue 10 items 6, 9, 11, 12, 13 and 14.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import kdisco
from kdisco import Discoverer, WatchCachePolicy
from kdisco._k8s.objects import MalformedObject, ServiceInfo, SliceInfo
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import (
    FakeApiServer,
    FakeNamespace,
    Json,
    Reply,
    client_for,
    eps_slice,
    put_backed,
    svc,
)
from tests.test_watchcache import hosts, informer, make, wait_until

# -- the strict parser (item 9) ----------------------------------------------------------


def service(**spec: Any) -> Json:
    return {"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], **spec}}


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"clusterIPs": "10.96.0.9"}, "spec.clusterIPs"),
        ({"clusterIPs": [7]}, "spec.clusterIPs[0]"),
        ({"clusterIPs": ["evil.com"]}, "spec.clusterIPs[0]"),
        ({"ports": [{"port": 99999}]}, "spec.ports[0].port"),
        ({"ports": [{"port": -1}]}, "spec.ports[0].port"),
        ({"ports": [{"port": 0}]}, "spec.ports[0].port"),
        ({"ports": [{"port": True}]}, "spec.ports[0].port"),
        ({"ports": [{"port": "80"}]}, "spec.ports[0].port"),
        ({"ports": [{}]}, "spec.ports[0].port"),
        ({"ports": "80"}, "spec.ports"),
        ({"type": 3}, "spec.type"),
        ({"publishNotReadyAddresses": "yes"}, "spec.publishNotReadyAddresses"),
    ],
)
def test_a_malformed_service_is_refused_naming_the_field(spec: Json, field: str) -> None:
    with pytest.raises(MalformedObject, match=f"Service 'web'.{field.replace('[', '.')}"):
        ServiceInfo.from_json(service(**spec))


def endpoint_slice(endpoint: Json, **extra: Any) -> Json:
    base: Json = {
        "metadata": {"name": "web-a", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080}],
        "endpoints": [endpoint],
    }
    base.update(extra)
    return base


@pytest.mark.parametrize(
    ("endpoint", "field"),
    [
        ({"addresses": ["192.0.2.1"], "conditions": {"ready": "false"}}, "conditions.ready"),
        ({"addresses": ["192.0.2.1"], "conditions": {"serving": 1}}, "conditions.serving"),
        ({"addresses": [None]}, "addresses"),
        ({"addresses": ["evil.com"]}, "addresses"),
        ({"addresses": ["2001:db8::1"]}, "addresses"),  # an IPv6 address in an IPv4 slice
        ({"addresses": "192.0.2.1"}, "addresses"),
        ({"addresses": ["192.0.2.1"], "hostname": 5}, "hostname"),
        ({"addresses": ["192.0.2.1"], "targetRef": "pod"}, "targetRef"),
        ("192.0.2.1", "endpoints[0]"),
    ],
)
def test_a_malformed_slice_is_refused_naming_the_field(endpoint: Any, field: str) -> None:
    with pytest.raises(MalformedObject) as info:
        SliceInfo.from_json(endpoint_slice(endpoint))
    assert "EndpointSlice 'web-a'.endpoints[0]" in str(info.value)
    assert field.split(".")[-1] in str(info.value)


@pytest.mark.parametrize("ports", [[{"port": 70000}], [{"port": "x"}], "8080"])
def test_malformed_slice_ports_are_refused(ports: Any) -> None:
    with pytest.raises(MalformedObject, match="ports"):
        SliceInfo.from_json(endpoint_slice({"addresses": ["192.0.2.1"]}, ports=ports))


def test_well_formed_objects_still_parse_with_nulls_where_the_api_allows_them() -> None:
    sl = SliceInfo.from_json(
        endpoint_slice(
            {"addresses": ["192.0.2.1"], "conditions": {"ready": None}, "hostname": None},
            ports=[{"name": "http", "port": None}],
        )
    )
    (ep,) = sl.endpoints(None)
    assert (ep.host, ep.ready, ep.hostname) == ("192.0.2.1", True, None)


# -- through the watch cache: one poison object (items 9, 12) ----------------------------


@pytest.fixture
def ns(server: FakeApiServer) -> FakeNamespace:
    fake = FakeNamespace(server)
    fake.put("services", svc("db"))
    fake.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1", "192.0.2.2"]))
    put_backed(fake, svc("web", headless=False))
    return fake


def test_one_malformed_service_leaves_the_rest_of_the_namespace_cached(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    bad = svc("broken", headless=False)
    bad["spec"]["ports"] = [{"name": "http"}]  # no port number
    ns.put("services", bad)
    with make(server) as d:
        assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2"}
        wait_until(lambda: informer(d, "services").watches >= 1, "watching")  # type: ignore[attr-defined]
        with pytest.raises(kdisco.DiscoveryUnavailable) as info:
            d.discover("broken")
        assert "spec.ports[0].port" in str(info.value)
        # Everything else is still answered from memory: no request per lookup.
        before = len(server.requests)
        for _ in range(5):
            assert d.discover("web").source == "api"
            d.clear_cache()
        assert len(server.requests) == before
        # Fixed upstream: the next event makes it answerable.
        put_backed(ns, svc("broken", headless=False))
        wait_until(lambda: _answers(d, "broken"), "repaired")


def _answers(d: Discoverer, name: str) -> bool:
    try:
        d.clear_cache()
        d.discover(name)
    except kdisco.DiscoveryError:
        return False
    return True


def test_a_malformed_slice_makes_its_service_say_so_not_lose_endpoints(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        assert hosts(d.discover("db")) == {"192.0.2.1", "192.0.2.2"}
        wait_until(lambda: informer(d, "endpointslices").watches >= 1, "watching")  # type: ignore[attr-defined]
        poison = eps_slice("db-b", "db", ["192.0.2.3"])
        poison["endpoints"][0]["conditions"]["ready"] = "false"
        ns.put("endpointslices", poison)
        wait_until(lambda: not _answers(d, "db"), "db refused")
        with pytest.raises(kdisco.DiscoveryUnavailable, match=r"conditions\.ready"):
            d.discover("db")
        assert _answers(d, "web")


# -- watch edge cases (items 13, 14) ------------------------------------------------------


def test_objects_of_another_namespace_are_not_cached(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(lambda: informer(d, "services").watches >= 1, "watching")  # type: ignore[attr-defined]
        foreign = svc("intruder", namespace="elsewhere", headless=False)
        foreign["metadata"]["resourceVersion"] = str(ns.rv + 1)
        ns.send("services", {"type": "ADDED", "object": foreign})
        put_backed(ns, svc("marker", headless=False))
        wait_until(lambda: _answers(d, "marker"), "events applied")
        d.clear_cache()
        with pytest.raises(kdisco.ServiceNotFound):
            d.discover("intruder")


def test_an_older_version_arriving_late_does_not_win(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(lambda: informer(d, "endpointslices").watches >= 1, "watching")  # type: ignore[attr-defined]
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.9"]))
        wait_until(lambda: hosts(d.discover("db")) == {"192.0.2.9"}, "new version")
        stale = eps_slice("db-a", "db", ["192.0.2.1"])
        stale["metadata"]["resourceVersion"] = "101"  # long before the one applied
        ns.send("endpointslices", {"type": "MODIFIED", "object": stale})
        put_backed(ns, svc("marker", headless=False))
        wait_until(lambda: _answers(d, "marker"), "events applied")
        assert hosts(d.discover("db")) == {"192.0.2.9"}


def test_an_error_event_with_a_string_410_re_lists(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        d.discover("db")
        slices = informer(d, "endpointslices")
        wait_until(lambda: slices.watches >= 1, "watching")  # type: ignore[attr-defined]
        lists = slices.lists  # type: ignore[attr-defined]
        ns.send(
            "endpointslices",
            {"type": "ERROR", "object": {"kind": "Status", "code": "410", "message": "too old"}},
        )
        wait_until(lambda: slices.lists > lists, "re-listed")  # type: ignore[attr-defined]


def test_a_bookmark_without_an_object_does_not_reconnect(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    with make(server) as d:
        d.discover("db")
        wait_until(lambda: ns.watches("endpointslices") >= 1, "watching")
        ns.send("endpointslices", {"type": "BOOKMARK", "object": None})
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.7"]))
        wait_until(lambda: hosts(d.discover("db")) == {"192.0.2.7"}, "still watching")
        assert ns.watches("endpointslices") == 1


def test_relist_interval_holds_even_when_the_server_keeps_the_watch_open(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    # The server's timeoutSeconds is not trusted to end the watch: with bookmarks
    # flowing, the client itself stops and re-lists once relist_interval has passed.
    clock = [1000.0]
    policy = WatchCachePolicy(backoff_initial=0.001, backoff_max=0.01, relist_interval=60.0)
    with make(server, policy, clock=lambda: clock[0]) as d:
        d.discover("db")
        wait_until(lambda: ns.watches("endpointslices") >= 1, "watching")
        assert ns.lists("endpointslices") == 1
        clock[0] += 61.0
        ns.bookmark("endpointslices")
        wait_until(lambda: ns.lists("endpointslices") >= 2, "re-listed")


def test_an_endless_watch_line_is_cut_and_the_watch_reopened(
    server: FakeApiServer, ns: FakeNamespace
) -> None:
    # 8 MiB without a newline: memory stays bounded, and the informer starts over.
    with make(server) as d:
        d.discover("db")
        slices = informer(d, "endpointslices")
        wait_until(lambda: slices.watches >= 1, "watching")  # type: ignore[attr-defined]
        chunk = b"x" * (1024 * 1024)
        for _ in range(8):
            ns.send("endpointslices", chunk.replace(b"\n", b""))
        wait_until(lambda: ns.watches("endpointslices") >= 2, "watch re-opened", limit=10)
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.5"]))
        wait_until(lambda: _hosts_now(d) == {"192.0.2.5"}, "recovered", limit=10)


def _hosts_now(d: Discoverer) -> set[str]:
    d.clear_cache()
    try:
        return hosts(d.discover("db"))
    except kdisco.DiscoveryError:
        return set()


# -- close() while a list waits for headers (item 11) -------------------------------------


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """Accepts connections, reads the request, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        with contextlib.suppress(OSError):
            while not stop.is_set():
                conn, _ = listener.accept()
                conns.append(conn)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        for c in conns:
            c.close()


def test_close_cuts_a_list_that_waits_for_headers() -> None:
    with silent_server() as port:
        api = ApiStrategy(
            client_factory=lambda: client_for(f"http://127.0.0.1:{port}"),
            watch=WatchCachePolicy(read_timeout=90.0),
        )
        d = Discoverer(strategies=[api], namespace="billing", environ={}, timeout=0.3)
        with pytest.raises(kdisco.DiscoveryError):
            d.discover("db")  # the informers are now blocked waiting for headers
        assert api.watch_cache is not None
        threads = api.watch_cache.threads()
        assert threads
        started = time.monotonic()
        d.close()
        # Not a speed figure: without the cut-off the threads would live for the
        # 90 s read timeout and close() would give up on them after 5 s.
        assert time.monotonic() - started < 2.0
        assert not [t for t in threads if t.is_alive()]


# -- a slow kubeconfig exec credential plugin (item 3) ------------------------------------


def test_a_slow_exec_plugin_costs_no_caller_more_than_its_deadline(
    server: FakeApiServer, tmp_path: Any
) -> None:
    # The plugin takes 5 s. Each caller waits for it only within its own deadline,
    # and none waits on a lock another caller holds.
    plugin = tmp_path / "slow-plugin.py"
    plugin.write_text(
        "import json, time\n"
        "time.sleep(5)\n"
        'print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1",'
        ' "kind": "ExecCredential", "status": {"token": "t"}}))\n'
    )
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: lab\n"
        f"clusters:\n- name: lab\n  cluster: {{server: '{server.url}'}}\n"
        "contexts:\n- name: lab\n  context: {cluster: lab, user: dev, namespace: shop}\n"
        "users:\n- name: dev\n  user:\n    exec:\n"
        "      apiVersion: client.authentication.k8s.io/v1beta1\n"
        f"      command: {sys.executable}\n      args: [{str(plugin)!r}]\n"
        "      interactiveMode: Never\n"
    )
    d = Discoverer(strategies=["api"], kubeconfig=config, environ={}, api_watch=False)
    elapsed: list[float] = []
    errors: list[BaseException] = []

    def call(timeout: float) -> None:
        started = time.monotonic()
        try:
            d.discover("web", timeout=timeout)
        except kdisco.DiscoveryError as exc:
            errors.append(exc)
        elapsed.append(time.monotonic() - started)

    with d:
        threads = [threading.Thread(target=call, args=(t,)) for t in (1.0, 0.5, 0.5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    # Bounds, not speed figures: without the fix the callers queue behind one lock
    # and the first alone takes the plugin's 5 s.
    assert len(elapsed) == 3
    assert max(elapsed) < 2.0
    assert len(errors) == 3
    assert all("credentials did not finish" in str(e) for e in errors)
    # The plugin finishes in the background; let it, so no thread outlives the test.
    for t in threading.enumerate():
        if t.name == "kdisco-credentials":
            t.join(10)


def test_redirects_are_not_followed_so_the_token_goes_nowhere_else(
    server: FakeApiServer, tmp_path: Any
) -> None:
    from tests._helpers_api import fake_apiserver, service_path, write_kubeconfig

    with fake_apiserver() as elsewhere:
        server.route(
            service_path("shop", "web"),
            Reply(302, b"", headers={"Location": elsewhere.url + service_path("shop", "web")}),
        )
        config = write_kubeconfig(tmp_path / "config", server.url, token="tok3nVALUE")
        d = Discoverer(
            strategies=["api"], kubeconfig=config, environ={}, api_watch=False, timeout=1.0
        )
        with d, pytest.raises(kdisco.DiscoveryError) as info:
            d.discover("web.shop")
        assert "302" in str(info.value)
        assert elsewhere.requests == []
        assert all(r.headers.get("authorization") == "Bearer tok3nVALUE" for r in server.requests)
