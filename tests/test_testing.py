"""``kdisco.testing`` and the ``kdisco_fake`` pytest fixture, as users meet them.

docs/testing.md is itself doctested (pytest collects docs/*.md); here are the parts a
doctest cannot show: the fixture, its pytest entry point, and clean-up after a test.
"""

from __future__ import annotations

import asyncio
import re
import textwrap
import threading
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import kdisco
from kdisco import Deadline, Discoverer, Endpoint, Miss, Outcome, Resolution
from kdisco._discoverer import _override, get_default_discoverer
from kdisco._names import Query
from kdisco.testing import FakeResolver, override

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs" / "testing.md"


def hermetic(*strategies: object) -> Discoverer:
    return Discoverer(
        strategies=list(strategies),  # type: ignore[arg-type]
        namespace="default",
        environ={},
        resolv_conf="/nonexistent",
    )


# -- FakeResolver ------------------------------------------------------------------------


def test_fake_resolver_answers_from_its_mapping() -> None:
    fake = FakeResolver({"payments": ["192.0.2.10:5432", "[2001:db8::1]:443"]})
    res = hermetic(fake).discover("payments")
    assert res.source == "fake"
    assert res.endpoints == (
        Endpoint(host="192.0.2.10", port=5432),
        Endpoint(host="2001:db8::1", port=443),
    )


def test_fake_resolver_is_a_strategy() -> None:
    fake = FakeResolver(name="mine")
    assert isinstance(fake, kdisco.Strategy)
    assert fake.name == "mine"
    assert FakeResolver().name == "fake"


def test_add_replace_remove() -> None:
    fake = FakeResolver({"db": ["192.0.2.1:5432"]})
    d = hermetic(fake)
    fake.add("db", ["192.0.2.2:5432"])  # replaces
    fake.add("cache.team", ["192.0.2.3:6379"])
    assert d.discover("db").first().host == "192.0.2.2"
    assert d.discover("cache.team").first().host == "192.0.2.3"
    fake.remove("db")
    with pytest.raises(kdisco.ServiceNotFound):
        d.discover("db")
    fake.remove("db")  # forgetting what is not there is fine: teardown code stays simple


def test_add_validates_like_the_constructor() -> None:
    fake = FakeResolver()
    with pytest.raises(kdisco.ConfigurationError, match="static entry 'db'"):
        fake.add("db", ["192.0.2.1:0"])
    with pytest.raises(kdisco.ConfigurationError, match="static key 'bad_name'"):
        fake.add("bad_name", ["192.0.2.1:1"])
    assert isinstance(fake.lookup(_query("db"), Deadline(1.0)), Miss)  # nothing half-added


def _query(name: str) -> Query:
    from kdisco._names import parse_query

    return parse_query(name, namespace=None, default_namespace="default", cluster_domain="c")


def test_fake_in_a_chain_falls_through_to_the_next_strategy() -> None:
    first = FakeResolver({"db": ["192.0.2.1:5432"]}, name="first")
    second = FakeResolver({"cache": ["192.0.2.2:6379"]}, name="second")
    d = hermetic(first, second)
    assert d.discover("db").source == "first"
    res = d.discover("cache")
    assert res.source == "second"
    assert [(a.strategy, a.outcome) for a in res.attempts] == [("first", Outcome.NOT_FOUND)]


def test_fake_in_front_of_the_env_strategy() -> None:
    pod_env = {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "POD_NAMESPACE": "shop",
        "PAYMENTS_SERVICE_HOST": "10.96.0.12",
        "PAYMENTS_SERVICE_PORT": "5432",
    }
    d = Discoverer(
        strategies=[FakeResolver({"cache": ["127.0.0.1:6379"]}), "env"],
        namespace="shop",
        environ=pod_env,
        resolv_conf="/nonexistent",
    )
    assert (d.discover("cache").source, d.discover("payments").source) == ("fake", "env")
    assert d.discover("payments").first().address == "10.96.0.12:5432"


# -- override ----------------------------------------------------------------------------


def test_override_makes_module_discover_use_the_fake() -> None:
    fake = FakeResolver({"payments": ["192.0.2.10:5432"]})
    with override(fake) as d:
        assert get_default_discoverer() is d
        assert [s.name for s in d.strategies] == ["fake"]
        res = kdisco.discover("payments")
        assert (res.source, res.first().address) == ("fake", "192.0.2.10:5432")
        assert res.service.namespace == "default"
    assert _override.get() is None


def test_override_is_hermetic_even_with_kdisco_variables_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Settings meant for the real app must not leak into a faked test.
    static = tmp_path / "static.toml"
    static.write_text('[services]\npayments = ["192.0.2.99:1"]\n')
    monkeypatch.setenv("KDISCO_STATIC", str(static))
    monkeypatch.setenv("KDISCO_NAMESPACE", "prod")
    monkeypatch.setenv("KDISCO_CLUSTER_DOMAIN", "corp.example")
    with override(FakeResolver({"payments": ["192.0.2.10:5432"]})) as d:
        res = kdisco.discover("payments")
    assert res.first().host == "192.0.2.10"
    assert res.service.fqdn == "payments.default.svc.cluster.local."
    assert d.namespace == "default"


def test_override_namespace_and_timeout() -> None:
    fake = FakeResolver({"db.billing": ["192.0.2.1:5432"]})
    with override(fake, namespace="billing", timeout=0.5) as d:
        assert kdisco.discover("db").first().host == "192.0.2.1"
        assert d.timeout == 0.5


def test_overrides_nest_and_unwind_on_error() -> None:
    outer = FakeResolver({"api": ["192.0.2.1:80"]})
    inner = FakeResolver({"api": ["192.0.2.2:80"]})
    seen: list[str] = []

    def failing_test_body() -> None:
        with override(inner):
            seen.append(kdisco.discover("api").first().host)
            raise RuntimeError("the test failed inside the block")

    with override(outer):
        with pytest.raises(RuntimeError):
            failing_test_body()
        seen.append(kdisco.discover("api").first().host)
    assert seen == ["192.0.2.2", "192.0.2.1"]
    assert _override.get() is None


def test_overrides_in_concurrent_threads_do_not_see_each_other() -> None:
    # Two tests running at once in threads (pytest-xdist's thread mode, or a test
    # that fans out) each see their own fake, never the other's.
    barrier = threading.Barrier(2, timeout=5)
    seen: dict[str, str] = {}

    def body(name: str, address: str) -> None:
        with override(FakeResolver({"api": [f"{address}:80"]})):
            barrier.wait()  # both overrides are active now
            seen[name] = kdisco.discover("api").first().host
            barrier.wait()

    threads = [
        threading.Thread(target=body, args=("one", "192.0.2.1")),
        threading.Thread(target=body, args=("two", "192.0.2.2")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert seen == {"one": "192.0.2.1", "two": "192.0.2.2"}
    assert _override.get() is None


def test_overrides_in_concurrent_asyncio_tasks_do_not_see_each_other() -> None:
    async def body(address: str, started: asyncio.Event, other: asyncio.Event) -> str:
        with override(FakeResolver({"api": [f"{address}:80"]})):
            started.set()
            await other.wait()  # the other task's override is active now too
            return kdisco.discover("api").first().host

    async def main() -> list[str]:
        a, b = asyncio.Event(), asyncio.Event()
        return list(await asyncio.gather(body("192.0.2.1", a, b), body("192.0.2.2", b, a)))

    assert asyncio.run(main()) == ["192.0.2.1", "192.0.2.2"]


def test_override_accepts_any_strategy() -> None:
    class Fixed:
        name = "fixed"

        def lookup(self, query: Query, deadline: Deadline) -> Resolution | Miss:
            return Resolution(
                service=query.service,
                kind=kdisco.ServiceKind.CLUSTER_IP,
                endpoints=(Endpoint(host="192.0.2.77", port=1),),
                source=self.name,
            )

    with override(Fixed()):
        assert kdisco.discover("anything").source == "fixed"


def test_unknown_service_under_override_says_what_was_tried() -> None:
    with override(FakeResolver()), pytest.raises(kdisco.ServiceNotFound) as info:
        kdisco.discover("orders")
    assert [(a.strategy, a.outcome, a.reason) for a in info.value.attempts] == [
        ("fake", Outcome.NOT_FOUND, "no static entry for orders.default")
    ]


# -- the pytest fixture ------------------------------------------------------------------


def test_plugin_is_registered_as_a_pytest11_entry_point() -> None:
    eps = [ep for ep in entry_points(group="pytest11") if ep.name == "kdisco"]
    assert [ep.value for ep in eps] == ["kdisco._pytest_plugin"]
    module = eps[0].load()
    assert hasattr(module, "kdisco_fake")


def test_plugin_is_loaded_in_this_session(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("kdisco")
    assert plugin is not None
    assert plugin.__name__ == "kdisco._pytest_plugin"


def test_fixture_directly(kdisco_fake: FakeResolver) -> None:
    assert isinstance(kdisco_fake, FakeResolver)
    with pytest.raises(kdisco.ServiceNotFound):
        kdisco.discover("search.shop")  # starts empty
    kdisco_fake.add("search.shop", {"endpoints": ["192.0.2.30"], "ports": {"http": 9200}})
    assert kdisco.discover("search.shop", port="http").url() == "http://192.0.2.30:9200"
    assert get_default_discoverer().strategies == (kdisco_fake,)


def test_fixture_override_ends_with_the_test(kdisco_fake: FakeResolver) -> None:
    # The fixture's override is the one active during the test...
    assert get_default_discoverer().strategies == (kdisco_fake,)
    # ...and a Service added by the test above is not here: each test gets a fresh fake.
    with pytest.raises(kdisco.ServiceNotFound):
        kdisco.discover("search.shop")


#: pytest-asyncio (a test dependency) warns in any project that does not set this.
ASYNC_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def _doc_blocks(title: str) -> dict[str, str]:
    """The files of the ```python block under ``title`` in docs/testing.md, split on
    their ``# <filename>`` header comments."""
    text = DOCS.read_text()
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    for block in re.findall(r"```python\n(.*?)```", section, re.DOTALL):
        names = re.findall(r"^# (\S+\.py)\n", block, flags=re.MULTILINE)
        if names:
            bodies = re.split(r"^# \S+\.py\n", block, flags=re.MULTILINE)[1:]
            return dict(zip(names, bodies, strict=True))
    raise AssertionError(f"no block of files under {title!r}")


def test_the_fixture_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("The `kdisco_fake` pytest fixture")
    assert sorted(files) == ["app.py", "test_app.py"]
    for name, body in files.items():
        pytester.makepyfile(**{name.removesuffix(".py"): body})
    pytester.makeini(ASYNC_INI)
    # The inner run finds the fixture only through the pytest11 entry point: no
    # conftest, no -p option.
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_fixture_example_would_catch_a_wrong_url(pytester: pytest.Pytester) -> None:
    # The control for the test above: the same example fails when the code is wrong.
    files = _doc_blocks("The `kdisco_fake` pytest fixture")
    pytester.makepyfile(
        app=files["app.py"].replace('port="http").url()', 'port="http").url("https")'),
        test_app=files["test_app.py"],
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)


def test_the_async_example_in_the_docs_passes(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("Async code")
    assert sorted(files) == ["async_app.py", "test_async_app.py"]
    for name, body in files.items():
        pytester.makepyfile(**{name.removesuffix(".py"): body})
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_the_async_example_would_catch_a_wrong_url(pytester: pytest.Pytester) -> None:
    files = _doc_blocks("Async code")
    pytester.makepyfile(
        async_app=files["async_app.py"].replace(
            'port="http")).url()', 'port="http")).url("https")'
        ),
        test_async_app=files["test_async_app.py"],
    )
    pytester.makeini(ASYNC_INI)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)


def test_fixture_in_a_fresh_project_without_kdisco_imports(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bare=textwrap.dedent(
            """
            def test_it(kdisco_fake):
                kdisco_fake.add("db", ["192.0.2.1:5432"])
                import kdisco
                assert kdisco.discover("db").first().address == "192.0.2.1:5432"
            """
        )
    )
    pytester.makeini(ASYNC_INI)
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)
