"""Change notification: per Discoverer, and only to whom it concerns."""

from __future__ import annotations

import threading

import pytest

import kdisco
import kdisco.testing
from kdisco import Notifier
from kdisco._strategies.api import ApiStrategy
from tests._helpers_api import (
    FakeApiServer,
    FakeNamespace,
    client_for,
    eps_slice,
    svc,
)


def test_a_subscription_wakes_only_for_its_own_services() -> None:
    n = Notifier()
    a = n.subscribe([("shop", "a")])
    b = n.subscribe([("shop", "b")])
    n.publish("shop", "a")
    assert a.wait(0) is True
    assert b.wait(0) is False
    n.publish("other", "b")  # same name, other namespace
    assert b.wait(0) is False


def test_a_namespace_wide_change_wakes_everyone_in_that_namespace_only() -> None:
    n = Notifier()
    a = n.subscribe([("shop", "a")])
    c = n.subscribe([("billing", "c")])
    n.publish("shop")
    assert (a.wait(0), c.wait(0)) == (True, False)
    n.publish_all()
    assert (a.wait(0), c.wait(0)) == (True, True)


def test_follow_and_close_change_what_wakes_a_subscription() -> None:
    n = Notifier()
    sub = n.subscribe([("shop", "a")])
    sub.follow([("shop", "b")])
    n.publish("shop", "a")
    assert sub.wait(0) is False
    n.publish("shop", "b")
    assert sub.wait(0) is True
    sub.close()
    n.publish("shop", "b")
    assert sub.wait(0) is False
    assert len(n) == 0


def test_forwarding_reaches_every_discoverer_notifier() -> None:
    own, first, second = Notifier(), Notifier(), Notifier()
    own.forward_to(first)
    own.forward_to(second)
    subs = [first.subscribe([("shop", "a")]), second.subscribe([("shop", "a")])]
    own.publish("shop", "a")
    assert [s.wait(0) for s in subs] == [True, True]


def test_wake_callback_runs_in_the_publishing_thread() -> None:
    n = Notifier()
    seen: list[threading.Thread] = []
    n.subscribe([("shop", "a")], wake=lambda: seen.append(threading.current_thread()))
    n.publish("shop", "a")
    assert seen == [threading.current_thread()]


def test_discoverers_do_not_share_notifications() -> None:
    fake = kdisco.testing.FakeResolver({"a.shop": ["192.0.2.1:80"]})
    with (
        kdisco.Discoverer(strategies=[fake], environ={}) as d1,
        kdisco.Discoverer(
            strategies=["static"], static={"a.shop": ["192.0.2.2:80"]}, environ={}
        ) as d2,
    ):
        sub1 = d1.notifier.subscribe([("shop", "a")])
        sub2 = d2.notifier.subscribe([("shop", "a")])
        fake.add("a.shop", ["192.0.2.3:80"])
        assert (sub1.wait(1), sub2.wait(0)) == (True, False)


@pytest.fixture
def namespace(server: FakeApiServer) -> FakeNamespace:
    ns = FakeNamespace(server)
    for name in ("db", "web"):
        ns.put("services", svc(name))
        ns.put("endpointslices", eps_slice(f"{name}-a", name, ["192.0.2.1"]))
    return ns


def test_the_watch_cache_publishes_the_service_that_changed(namespace: FakeNamespace) -> None:
    url = namespace.server.url
    api = ApiStrategy(client_factory=lambda: client_for(url), watch=True)
    with kdisco.Discoverer(strategies=[api], namespace="billing", environ={}) as d:
        d.discover("db")  # starts the namespace's watch cache
        db = d.notifier.subscribe([("billing", "db")])
        web = d.notifier.subscribe([("billing", "web")])
        namespace.put("endpointslices", eps_slice("web-a", "web", ["192.0.2.9"]))
        assert web.wait(5) is True
        assert db.wait(0.2) is False  # web's change is not db's business
        namespace.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.8"]))
        assert db.wait(5) is True
