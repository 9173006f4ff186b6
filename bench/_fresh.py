"""Benchmark 9's child: run as ``python -c <this file's text> MODE ARGS_JSON``.

In a fresh interpreter: time ``import kdisco`` (and note the modules it added), then
build a Discoverer and make its first lookup, then build a second Discoverer and make
its first lookup (imports, lazy set-up and the first connection are paid once, by the
first), and for the api modes, time a bare TLS handshake to the same apiserver with
``ssl`` alone. Prints one JSON line. Only stdlib and kdisco: nothing of ``bench``
is imported, so the timings see what an application would.
"""

import sys
import time

_t0 = time.perf_counter()
_before = set(sys.modules)
import kdisco  # noqa: E402 - timing the import is the point

IMPORT_SECONDS = time.perf_counter() - _t0
ADDED = sorted(set(sys.modules) - _before)

import json  # noqa: E402
import socket  # noqa: E402
import ssl  # noqa: E402
import statistics  # noqa: E402
from typing import Any  # noqa: E402

#: Modules whose presence after ``import kdisco`` the report states.
WATCHED = ("dns", "kubernetes", "urllib3", "yaml", "tomllib")
MARKER = "kdisco-bench: lookups start"


def make(mode: str, args: dict[str, Any]) -> kdisco.Discoverer:
    if mode == "dns":
        return kdisco.Discoverer(strategies=["dns"], environ=args["environ"])
    if mode == "env":
        return kdisco.Discoverer(strategies=["env"], environ=args["environ"])
    kind, _, creds = mode.partition(":")
    watch = kind == "api-watch"
    if creds == "kubeconfig":
        return kdisco.Discoverer(
            strategies=["api"], api_watch=watch, kubeconfig=args["kubeconfig"], environ={}
        )
    return kdisco.Discoverer(
        strategies=["api"],
        api_watch=watch,
        serviceaccount_dir=args["serviceaccount_dir"],
        environ=args["environ"],
    )


def lookup(mode: str, args: dict[str, Any]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    d = make(mode, args)
    res = d.discover(args["name"])
    seconds = time.perf_counter() - t0
    d.close()  # after the clock: a watch's threads stop before the next Discoverer starts
    return seconds, len(res.endpoints), res.source


def tls_handshake(url: str, cafile: str) -> float:
    """A new context with the lab's CA, a TCP connect, a TLS handshake: what a new
    connection pool pays before its first request."""
    host, _, port = url.split("://", 1)[1].rpartition(":")
    t0 = time.perf_counter()
    ctx = ssl.create_default_context(cafile=cafile)
    with (
        socket.create_connection((host, int(port)), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=host),
    ):
        pass
    return time.perf_counter() - t0


def main() -> None:
    mode = sys.argv[1]
    args: dict[str, Any] = json.loads(sys.argv[2])
    out: dict[str, Any] = {
        "import": IMPORT_SECONDS,
        "added": len(ADDED),
        "watched": [m for m in WATCHED if any(a == m or a.startswith(m + ".") for a in ADDED)],
    }
    if mode != "import":
        # Under ``-X importtime``, what is imported after this line is the lookups' doing.
        print(MARKER, file=sys.stderr, flush=True)
        out["first"], n1, s1 = lookup(mode, args)
        out["second"], n2, s2 = lookup(mode, args)
        out["endpoints"], out["sources"] = [n1, n2], [s1, s2]
        if mode.startswith("api"):
            out["tls"] = statistics.median(
                tls_handshake(args["apiserver_url"], args["ca"]) for _ in range(3)
            )
    print(json.dumps(out), flush=True)


if __name__ == "__main__":  # python -c sets it too
    main()
