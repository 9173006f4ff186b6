"""``python -m bench [--quick] [N ...]``: run kdisco's benchmarks against the lab.

With no numbers, all of them run. A full run (all of them, not ``--quick``) writes
``docs/performance.md``; other runs print the report unless ``--output`` is given.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ._common import Section, Settings, progress

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "performance.md"
LAST = 17  # benchmarks are numbered 1 to LAST


def _benchmarks() -> dict[int, Callable[[Settings], Section]]:
    from . import aio, api, coldpath, fleet, http, live, local, pickers, startup

    return {
        1: local.bench_cached,
        2: local.bench_dns,
        3: api.bench_read,
        4: api.bench_memory,
        5: live.bench_propagation,
        6: live.bench_load,
        7: api.bench_growth,
        8: startup.bench_process,
        9: startup.bench_fresh,
        10: coldpath.bench_cold_path,
        11: fleet.bench_fleet,
        12: aio.bench_concurrent,
        13: aio.bench_cached,
        14: aio.bench_stalls,
        15: pickers.bench_pick,
        16: pickers.bench_spread,
        17: http.bench_transport,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "numbers",
        nargs="*",
        type=int,
        metavar="N",
        help=f"benchmarks to run (1-{LAST}; default: all)",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"where to write the report (default: {DOC.relative_to(REPO)} "
        "for a full run, else print it)",
    )
    args = parser.parse_args(argv)
    if any(n not in range(1, LAST + 1) for n in args.numbers):
        parser.error(f"benchmarks are numbered 1 to {LAST}")
    numbers = sorted(set(args.numbers)) or list(range(1, LAST + 1))
    full = numbers == list(range(1, LAST + 1)) and not args.quick
    output = args.output if args.output is not None else (DOC if full else None)

    # Every figure is for the cluster view, what a pod gets. The bench runs outside
    # the cluster, where the default reach ("auto") would first look for a way in
    # from outside (an Ingress list per uncached lookup); subprocesses inherit this.
    os.environ["KDISCO_REACH"] = "cluster"

    from lab import ensure_lab
    from lab.objects import Cluster

    from . import report

    command = "PYTHONPATH=. python -m bench" + (
        " " + shlex.join(sys.argv[1:] if argv is None else argv) if (argv or sys.argv[1:]) else ""
    )
    benchmarks = _benchmarks()
    started = time.monotonic()
    sections: list[Section] = []
    with ensure_lab() as lab:
        cluster = Cluster(str(lab.kubeconfig))
        settings = Settings(quick=args.quick, lab=lab, cluster=cluster)
        try:
            for n in numbers:
                t0 = time.monotonic()
                progress(f"benchmark {n} ...")
                sections.append(benchmarks[n](settings))
                progress(f"benchmark {n} done in {time.monotonic() - t0:.0f} s")
        finally:
            for ns in settings.namespaces:
                try:
                    # Delete the bulky objects first: the namespace controller would
                    # do it too, but in the background, while later runs measure.
                    cluster.discovery.delete_collection_namespaced_endpoint_slice(ns)
                    for svc in cluster.services(ns):
                        cluster.core.delete_namespaced_service(svc["metadata"]["name"], ns)
                    cluster.delete_namespace(ns)
                except Exception as exc:  # the report matters more than the cleanup
                    progress(f"could not delete namespace {ns}: {exc}")
            cluster.close()
    text = report.render(sections, command, time.monotonic() - started)
    if output is None:
        print(text)
    else:
        output.write_text(text)
        progress(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
