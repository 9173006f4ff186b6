"""Every public name has a docstring, and every parameter is named in its ``Args:``.

What users reach is walked: ``kdisco.__all__`` (the lazily loaded balancing names
too), ``kdisco.aio``, ``kdisco.testing`` (and the ``kdisco_fake`` fixture), and the
integrations ``kdisco.httpx``, ``kdisco.requests`` and ``kdisco.grpc``: each public
function, class, method and property. Docstrings are Google style, rendered by
``sphinx.ext.napoleon`` (docs/conf.py); ``help()`` shows them as they are written.

- A function or method names each of its parameters (``self``/``cls`` aside, and
  ``*args``/``**kwargs`` listed in ``PASSTHROUGH``) in an ``Args:`` section.
- A class names its constructor's parameters in its own docstring (``Args:``, or
  ``Attributes:`` for a value object whose fields are its arguments), in its
  ``__init__``'s, or, when it inherits its constructor, in the docstring of the
  class it inherits it from (``ServiceNotFound`` from ``DiscoveryError``).
- A property's first line has no bare colon: napoleon reads ``type: text`` there,
  which is how ``Resolution.age`` once rendered garbled.
- Every ``>>>`` example runs (those that need a cluster say ``# doctest: +SKIP``).
- The API reference (docs/api.md) has each public name, and each class there lists
  every public method and property it has.

Members are checked where kdisco defines them (an override of an httpx or requests
method included); what a class inherits from the standard library or a third-party
base is that project's to document. Parameters whose names start with ``_`` are
private by name and not checked.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import kdisco

#: ``*args``/``**kwargs`` that only pass through to another API: ``module.qualname``
#: -> the parameter names allowed to go unnamed in ``Args:``.
PASSTHROUGH: dict[str, frozenset[str]] = {}

#: Section headers napoleon reads as parameter lists (Google style).
ARG_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "other parameters",
    }
)
#: A class's docstring may also name its constructor arguments as its fields.
CLASS_SECTIONS = ARG_SECTIONS | {"attributes"}

_HEADER = re.compile(r"^(?P<indent>\s*)(?P<title>[A-Za-z][A-Za-z ]*):\s*$")
_ENTRY = re.compile(r"^\s*\**(?P<name>[A-Za-z_]\w*)\s*(\([^)]*\))?\s*:")
# What napoleon skips when it looks for ``type: text`` in a property's first line.
_CODE = re.compile(r":[\w\-+:.]+:`[^`]+`|``.+?``|`.+?`")
_BARE_COLON = re.compile(r"(?<!:):(?!:)")


def documented(doc: str | None, sections: frozenset[str]) -> set[str]:
    """The names listed in ``doc``'s sections of the given titles."""
    names: set[str] = set()
    if not doc:
        return names
    lines = inspect.cleandoc(doc).splitlines()
    i = 0
    while i < len(lines):
        header = _HEADER.match(lines[i])
        i += 1
        if header is None or header["title"].strip().lower() not in sections:
            continue
        outer = len(header["indent"])
        entry_indent: int | None = None
        while i < len(lines):
            line = lines[i]
            if line.strip():
                indent = len(line) - len(line.lstrip())
                if indent <= outer:
                    break
                if entry_indent is None:
                    entry_indent = indent
                if indent == entry_indent:
                    entry = _ENTRY.match(line)
                    if entry is not None:
                        names.add(entry["name"])
            i += 1
    return names


def own_doc(obj: object) -> str | None:
    doc = getattr(obj, "__doc__", None)
    return doc if isinstance(doc, str) and doc.strip() else None


def parameters(func: Callable[..., object], *, bound: bool = False) -> list[inspect.Parameter]:
    """``func``'s parameters a caller passes (``self``/``cls`` left out)."""
    params = list(inspect.signature(func).parameters.values())
    if bound and params:
        params = params[1:]
    return [p for p in params if p.name not in ("self", "cls") and not p.name.startswith("_")]


def undocumented_params(where: str, params: list[inspect.Parameter], named: set[str]) -> list[str]:
    allowed = PASSTHROUGH.get(where, frozenset())
    return [
        f"{where}: parameter {p.name!r} is not in Args:"
        for p in params
        if p.name not in named and p.name not in allowed
    ]


def check_function(where: str, func: Callable[..., object], *, bound: bool = False) -> list[str]:
    doc = own_doc(func)
    if doc is None:
        return [f"{where}: no docstring"]
    return undocumented_params(where, parameters(func, bound=bound), documented(doc, ARG_SECTIONS))


def check_property(where: str, prop: property) -> list[str]:
    doc = own_doc(prop) or own_doc(prop.fget)
    if doc is None:
        return [f"{where}: no docstring"]
    first = _CODE.sub("", inspect.cleandoc(doc).splitlines()[0])
    if _BARE_COLON.search(first):
        return [f"{where}: a colon in the first line reads as 'type: text' to napoleon"]
    return []


def is_ours(obj: object) -> bool:
    return str(getattr(obj, "__module__", "") or "").startswith("kdisco")


def defining_class(cls: type, name: str) -> type | None:
    """The class in ``cls``'s MRO whose body defines ``name`` (None: a metaclass's)."""
    return next((c for c in cls.__mro__ if name in vars(c)), None)


def check_constructor(where: str, cls: type) -> list[str]:
    owner = defining_class(cls, "__init__")
    if getattr(cls, "_is_protocol", False) or owner is None or not is_ours(owner):
        return []  # a protocol is not built; object's, Enum's or a library's __init__
    init = vars(owner)["__init__"]
    named = documented(cls.__doc__, CLASS_SECTIONS) | documented(own_doc(init), ARG_SECTIONS)
    if owner is not cls:
        named |= documented(owner.__doc__, CLASS_SECTIONS)
    return undocumented_params(f"{where}()", parameters(init, bound=True), named)


def members(cls: type) -> Iterator[tuple[str, object]]:
    """The public methods and properties kdisco defines on ``cls`` (or its bases)."""
    for name in sorted(dir(cls)):
        owner = defining_class(cls, name)
        if name.startswith("_") or owner is None or not is_ours(owner):
            continue
        raw = vars(owner)[name]
        if isinstance(raw, property | classmethod | staticmethod) or inspect.isfunction(raw):
            yield name, raw


def check_class(where: str, cls: type) -> list[str]:
    problems = [] if own_doc(cls) else [f"{where}: no docstring"]
    problems += check_constructor(where, cls)
    for name, raw in members(cls):
        member = f"{where}.{name}"
        if isinstance(raw, property):
            problems += check_property(member, raw)
        elif isinstance(raw, classmethod | staticmethod):
            problems += check_function(member, getattr(cls, name))
        elif inspect.isfunction(raw):
            problems += check_function(member, raw, bound=True)
    return problems


def check(where: str, obj: object) -> list[str]:
    if isinstance(obj, type):
        return check_class(where, obj)
    if callable(obj):
        return check_function(where, obj)
    return []  # a constant such as kdisco.grpc.ROUND_ROBIN, or __version__


def public_names(module: types.ModuleType) -> Iterator[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [n for n in vars(module) if not n.startswith("_")]
    return (n for n in names if not n.startswith("_"))


EAGER = [n for n in kdisco.__all__ if n not in kdisco._LAZY and not n.startswith("_")]


def problems_in(module_name: str, names: list[str] | None = None) -> list[str]:
    module = importlib.import_module(module_name)
    problems = [] if own_doc(module) else [f"{module_name}: no module docstring"]
    for name in names if names is not None else list(public_names(module)):
        problems += check(f"{module_name}.{name}", getattr(module, name))
    return problems


CASES = [
    pytest.param("kdisco", EAGER, id="kdisco"),
    pytest.param("kdisco", sorted(kdisco._LAZY), id="kdisco-balancing"),
    pytest.param("kdisco.aio", None, id="kdisco.aio"),
    pytest.param("kdisco.testing", None, id="kdisco.testing"),
    pytest.param("kdisco.httpx", None, id="kdisco.httpx"),
    pytest.param("kdisco.requests", None, id="kdisco.requests"),
    pytest.param("kdisco.grpc", None, id="kdisco.grpc"),
]


def examples() -> list[doctest.DocTest]:
    """The ``>>>`` examples in the docstrings of every public name walked here."""
    import kdisco.aio  # kdisco.aio in the examples' namespace

    finder = doctest.DocTestFinder(exclude_empty=True)
    found: list[doctest.DocTest] = []
    for case in CASES:
        module_name, names = case.values
        assert isinstance(module_name, str)
        module = importlib.import_module(module_name)
        for name in names if isinstance(names, list) else list(public_names(module)):
            obj = getattr(module, name)
            if isinstance(obj, type) or callable(obj):
                # module=False: the classes say they live in kdisco, not where defined.
                where = f"{module_name}.{name}"
                found += finder.find(obj, where, module=False, globs={"kdisco": kdisco})
    return sorted((t for t in found if t.examples), key=lambda t: t.name)


@pytest.mark.parametrize(("module_name", "names"), CASES)
def test_public_names_are_documented(module_name: str, names: list[str] | None) -> None:
    problems = problems_in(module_name, names)
    assert not problems, "\n".join(["undocumented:", *problems])


@pytest.mark.parametrize("example", examples(), ids=lambda t: t.name)
def test_docstring_examples_run(example: doctest.DocTest) -> None:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    out: list[str] = []
    runner.run(example, out=out.append)
    assert runner.failures == 0, "".join(out)


API_MD = Path(__file__).resolve().parents[1] / "docs" / "api.md"
_DIRECTIVE = re.compile(
    r"^\.\. auto(?P<kind>\w+):: (?P<target>\S+)\n(?P<options>(?:   .*\n)*)", re.MULTILINE
)
_MEMBERS = re.compile(r":members:(?P<names>[^:]*)")


def reference() -> dict[str, set[str] | None]:
    """docs/api.md's auto directives: target -> the members it lists (None: none)."""
    found: dict[str, set[str] | None] = {}
    for directive in _DIRECTIVE.finditer(API_MD.read_text()):
        listed = _MEMBERS.search(directive["options"])
        names = None if listed is None else set(re.findall(r"\w+", listed["names"]))
        found[directive["target"]] = names
    return found


@pytest.mark.parametrize(("module_name", "names"), CASES)
def test_the_api_reference_is_complete(module_name: str, names: list[str] | None) -> None:
    module = importlib.import_module(module_name)
    documented_here = reference()
    missing: list[str] = []
    for name in names if names is not None else list(public_names(module)):
        target = f"{module_name}.{name}"
        if target not in documented_here:
            missing.append(target)
            continue
        obj = getattr(module, name)
        if isinstance(obj, type):
            listed = documented_here[target] or set()
            missing += [f"{target}.{m}" for m, _ in members(obj) if m not in listed]
    assert missing == [], "not in docs/api.md"


def test_the_kdisco_fake_fixture_is_documented() -> None:
    from kdisco import _pytest_plugin

    doc = inspect.getdoc(_pytest_plugin.kdisco_fake)
    assert doc
    assert "FakeResolver" in doc


def test_the_walk_sees_what_it_should() -> None:
    # The check must look at something: parameters, constructors and the lazy names.
    def undocumented(name: str, port: int) -> None:
        """Summary.

        Args:
            name: the name.
        """

    assert check_function("f", undocumented) == ["f: parameter 'port' is not in Args:"]
    assert {"host", "port", "zone"} <= documented(kdisco.Endpoint.__doc__, CLASS_SECTIONS)
    assert {"name", "port", "timeout", "reach"} <= documented(kdisco.discover.__doc__, ARG_SECTIONS)
    made = type("C", (), {"__init__": undocumented, "__doc__": "C.", "__module__": "kdisco.x"})
    assert check_constructor("C", made) == ["C(): parameter 'port' is not in Args:"]
    assert {"Balancer", "RoundRobin"} <= set(kdisco._LAZY)


def test_the_docstring_parser() -> None:
    doc = """Summary.

    Args:
        name (str): the name.
            More about it: with a colon.
        port: the port.
        *args: passed on.

    Returns:
        nothing: really.
    """
    assert documented(doc, ARG_SECTIONS) == {"name", "port", "args"}
    assert documented(doc, frozenset({"returns"})) == {"nothing"}
    assert check_property("p", property(lambda self: 1, doc="Seconds since: now")) != []
    assert check_property("p", property(lambda self: 1, doc="``host:port`` or host")) == []
