"""Which strategy a name stands for: the built-ins, then the ``kdisco.strategies`` entry points.

A package adds a strategy by declaring an entry point in that group, naming a
factory ``factory(settings, notifier) -> Strategy``::

    [project.entry-points."kdisco.strategies"]
    consul = "kdisco_consul:ConsulStrategy.from_settings"

It is then usable by name in ``Discoverer(strategies=[...])``, ``KDISCO_STRATEGIES``
and ``kdisco resolve --strategies``. Built-in modules are imported only when their
strategy is used, so a DNS-only process never loads the API machinery.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol, cast

from kdisco._exceptions import ConfigurationError
from kdisco._notify import Notifier
from kdisco._settings import Settings

from .base import Strategy

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

ENTRY_POINT_GROUP = "kdisco.strategies"


class StrategyFactory(Protocol):
    """What the registry (and the ``kdisco.strategies`` entry point group) holds:
    ``factory(settings, notifier) -> Strategy``.

    ``settings`` is the ``Discoverer``'s resolved configuration (its ``environ`` is
    where a strategy reads its own variables); ``notifier`` is where a strategy that
    learns of changes publishes them (``notifier.publish(namespace, name)``), so
    ``kdisco.watch()`` wakes at once.

    Called with two positional arguments:

    Args:
        settings: The `Settings` of the `Discoverer` being built.
        notifier: The Discoverer's `Notifier`.

    Returns:
        Strategy: The strategy, built (an object with ``name`` and
        ``lookup(query, deadline)``).

    Raises:
        ConfigurationError: The strategy cannot be built from these settings (the
            Discoverer raises it to its caller). A factory may raise it; kdisco
            raises it when the factory fails to load or returns no strategy.

    Example:
        In a plugin's ``pyproject.toml``::

            [project.entry-points."kdisco.strategies"]
            consul = "kdisco_consul:ConsulStrategy.from_settings"
    """

    def __call__(self, settings: Settings, notifier: Notifier, /) -> Strategy: ...


#: Built-in strategy name -> module whose ``from_settings`` builds it.
BUILTIN = {
    "static": "kdisco._strategies.static",
    "dns": "kdisco._strategies.dns",
    "env": "kdisco._strategies.env",
    "api": "kdisco._strategies.api",
}


def _entry_points() -> dict[str, EntryPoint]:
    # Scanning installed distributions costs ~25 ms: done only when a name is not
    # built in, or the known names are listed for an error message.
    from importlib.metadata import entry_points

    # Names are matched as users type them, case-insensitively (KDISCO_STRATEGIES=Hosts).
    return {ep.name.lower(): ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def known_names() -> list[str]:
    """Every strategy name that can be used here: built-ins first, then plugins."""
    return list(BUILTIN) + sorted(set(_entry_points()) - set(BUILTIN))


def factory(name: str, *, where: str = "strategies") -> StrategyFactory:
    """The factory for ``name``; ConfigurationError listing the known names if none."""
    key = name.strip().lower()
    module = BUILTIN.get(key)
    if module is not None:
        return cast(StrategyFactory, importlib.import_module(module).from_settings)
    found = _entry_points().get(key)
    if found is None:
        raise ConfigurationError(
            f"{where}: unknown strategy {name!r} (known: {', '.join(known_names())}; "
            f"other packages add strategies through the {ENTRY_POINT_GROUP!r} entry point group)"
        )
    try:
        loaded = found.load()
    except Exception as exc:
        raise ConfigurationError(
            f"{where}: strategy {name!r} from {found.value!r} failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not callable(loaded):
        raise ConfigurationError(f"{where}: entry point {found.value!r} is not callable")
    return cast(StrategyFactory, loaded)


def build(item: str | Strategy, settings: Settings, notifier: Notifier, *, where: str) -> Strategy:
    """A strategy from a name (through its factory) or an object given in code."""
    if isinstance(item, str):
        strategy = factory(item, where=where)(settings, notifier)
        if not isinstance(strategy, Strategy):
            raise ConfigurationError(
                f"{where}: the factory of strategy {item!r} returned {strategy!r}, "
                "not an object with .name and .lookup(query, deadline)"
            )
        return strategy
    if isinstance(item, Strategy):
        return item
    raise ConfigurationError(
        f"strategy {item!r} is neither a name ({', '.join(known_names())}) "
        "nor an object with .name and .lookup(query, deadline)"
    )
