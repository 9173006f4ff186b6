"""Benchmarks 8 (the whole ``kdisco resolve`` process) and 9 (a fresh interpreter's
first and second lookups): cold start, issue 13."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kdisco
from lab.kube import incluster_env
from lab.objects import kubelet_env

from . import _kubectl
from ._cluster import headless_service, namespace
from ._common import Section, Settings, Target, mb, median, ms, progress, ratio
from ._fresh import MARKER
from .local import _wait_for_dns

REPO = Path(__file__).resolve().parents[1]
TIME = "/usr/bin/time"

#: The Role of README's "Permissions for the api strategy" (with the watch cache).
RULES = [
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["list", "watch"],
    },
]
ENDPOINTS = 5  # "a handful"
SERVICE = "cold"

#: Without /usr/bin/time: a small launcher that forks, execs the command and reports
#: its child's ru_maxrss. The child's peak then has the launcher's ~8 MB as a floor
#: (a forked child starts with its parent's resident pages) and the wall time the
#: launcher's start. Under /usr/bin/time, a Python child reports the same ru_maxrss
#: for itself (getrusage) as time reports for it.
_LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    try:\n"
    "        os.execvp(sys.argv[2], sys.argv[2:])\n"
    "    finally:\n"
    "        os._exit(127)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    f.write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


@dataclass
class ProcessRun:
    wall: float  # seconds, from spawning the wrapper until it is reaped
    peak: int  # bytes: the command's own ru_maxrss
    stdout: bytes


def measure_process(argv: list[str], env: dict[str, str], rss_file: Path) -> ProcessRun:
    """Run ``argv`` once in a new process: wall time and the peak resident set size.

    The peak is the command's own ``ru_maxrss``, read by a small parent
    (``/usr/bin/time``), not by this process: a child forked from a large parent would
    inherit the parent's high-water mark and report it as its own.
    """
    if os.access(TIME, os.X_OK):
        wrapped = [TIME, "-f", "%M", "-o", str(rss_file), *argv]
    else:
        wrapped = [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(rss_file), *argv]
    t0 = time.perf_counter()
    proc = subprocess.run(wrapped, env=env, capture_output=True, timeout=120, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{argv[0]} exited {proc.returncode}: {proc.stdout[-500:]!r} {proc.stderr[-2000:]!r}"
        )
    kib = int(rss_file.read_text().split()[-1])
    return ProcessRun(wall, kib * 1024, proc.stdout)


def kdisco_command() -> list[str]:
    """The ``kdisco`` script next to this interpreter, else ``python -m kdisco``."""
    script = Path(sys.executable).with_name("kdisco")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "kdisco"]


def base_env(home: Path) -> dict[str, str]:
    """What every child gets: nothing of this process's environment but PATH."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),  # the checkout's kdisco, as in the bench itself
    }


def cold_service(settings: Settings) -> tuple[str, str]:
    """A headless Service with a handful of endpoints (benchmarks 8 and 9)."""
    if "cold" not in settings.cache:
        ns = namespace(settings, "bench-cold")
        headless_service(settings, ns, SERVICE, ENDPOINTS)
        settings.cache["cold"] = (ns, SERVICE)
    return settings.cache["cold"]  # type: ignore[no-any-return]


def serviceaccount_dir(settings: Settings, dest: Path) -> Path:
    """``token``, ``ca.crt`` and ``namespace`` as the kubelet mounts them, the token
    from the TokenRequest API for a ServiceAccount bound to ``RULES``."""
    ns, _ = cold_service(settings)
    ca = str(settings.lab.ca_path)
    if "cold-sa" not in settings.cache:
        settings.cluster.serviceaccount_credentials(ns, dest, ca, rules=RULES)
        settings.cache["cold-sa"] = True
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "token").write_text(settings.cluster.token(ns, "kdisco"))
    (dest / "ca.crt").write_bytes(Path(ca).read_bytes())
    (dest / "namespace").write_text(ns)
    return dest


# -- benchmark 8 ------------------------------------------------------------------------


@dataclass
class Case:
    label: str
    argv: list[str]
    env: Callable[[], dict[str, str]]  # called before each run (a fresh HOME, say)
    check: Callable[[bytes], None]
    runs: list[ProcessRun] = field(default_factory=list)


def _kdisco_check(out: bytes) -> None:
    found = len(json.loads(out)["endpoints"])
    if found != ENDPOINTS:
        raise RuntimeError(f"kdisco resolve found {found} endpoints, expected {ENDPOINTS}")


def _kubectl_check(out: bytes) -> None:
    found = sum(len(s.get("endpoints") or []) for s in json.loads(out)["items"])
    if found != ENDPOINTS:
        raise RuntimeError(f"kubectl listed {found} endpoints, expected {ENDPOINTS}")


def _no_check(out: bytes) -> None:
    del out


@contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kdisco-bench-") as tmp:
        yield Path(tmp)


def bench_process(settings: Settings) -> Section:
    runs = settings.n(7, 3)
    lab = settings.lab
    ns, svc = cold_service(settings)
    debian = _kubectl.debian()
    path_kubectl = _kubectl.on_path()
    with _workdir() as tmp:
        sa = serviceaccount_dir(settings, tmp / "serviceaccount")
        empty_home = tmp / "home-empty"
        # One HOME per kubectl kept across runs: its ~/.kube/cache stays warm, and two
        # kubectl versions never read each other's discovery cache.
        warm_home = tmp / "home-kubectl"
        warm_home_path = tmp / "home-kubectl-on-path"
        for d in (empty_home, warm_home, warm_home_path):
            d.mkdir()
        homes = itertools.count()

        def fresh_home() -> dict[str, str]:
            home = tmp / f"home-{next(homes)}"
            home.mkdir()
            return base_env(home)

        kd = kdisco_command()
        resolve = [*kd, "resolve", f"{svc}.{ns}", "--strategies", "api", "--json"]
        get = [
            "get",
            "endpointslices",
            "-n",
            ns,
            "-l",
            f"kubernetes.io/service-name={svc}",
            "-o",
            "json",
            "--kubeconfig",
            str(lab.kubeconfig),
        ]
        cases: dict[str, Case] = {}
        cases["kdisco kubeconfig"] = Case(
            "`kdisco resolve`, kubeconfig (KUBECONFIG)",
            resolve,
            lambda: {**base_env(empty_home), "KUBECONFIG": str(lab.kubeconfig)},
            _kdisco_check,
        )
        cases["kdisco in-cluster"] = Case(
            "`kdisco resolve`, in-cluster (service-account token)",
            resolve,
            lambda: {
                **base_env(empty_home),
                **incluster_env(lab),
                "KDISCO_SERVICEACCOUNT_DIR": str(sa),
            },
            _kdisco_check,
        )
        baseline: str | None = None
        if debian is not None:
            cases["kubectl"] = Case(
                f"`kubectl get endpointslices` (Debian, {debian.version}), discovery cache warm",
                [debian.path, *get],
                lambda: base_env(warm_home),
                _kubectl_check,
            )
            cases["kubectl cold"] = Case(
                f"`kubectl get endpointslices` (Debian, {debian.version}), discovery cache empty",
                [debian.path, *get],
                fresh_home,
                _kubectl_check,
            )
            baseline = "kubectl"
        if path_kubectl is not None and (
            debian is None or os.path.realpath(path_kubectl.path) != os.path.realpath(debian.path)
        ):
            cases["kubectl on PATH"] = Case(
                f"`kubectl get endpointslices` (on PATH, {path_kubectl.version}), "
                "discovery cache warm",
                [path_kubectl.path, *get],
                lambda: base_env(warm_home_path),
                _kubectl_check,
            )
            baseline = baseline or "kubectl on PATH"
        cases["python"] = Case(
            "`python -c pass` (the same interpreter)",
            [sys.executable, "-c", "pass"],
            lambda: base_env(empty_home),
            _no_check,
        )
        progress(f"8: {runs} rounds of {len(cases)} processes (one warm-up round first)")
        rss = tmp / "maxrss"
        stop = time.monotonic() + 150
        for round_ in range(runs + 1):
            for case in cases.values():
                run = measure_process(case.argv, case.env(), rss)
                case.check(run.stdout)
                if round_:  # round 0 warms the page cache, .pyc files, kubectl's cache
                    case.runs.append(run)
            if round_ and time.monotonic() > stop:
                break
    wall = {k: median([r.wall for r in c.runs]) for k, c in cases.items()}
    peak = {k: median([r.peak for r in c.runs]) for k, c in cases.items()}
    worst = {k: max(r.peak for r in c.runs) for k, c in cases.items()}
    rows = [
        [
            c.label,
            ms(wall[k]),
            ratio(wall[k], wall[baseline]) if baseline else "n/a",
            mb(peak[k]),
            mb(worst[k]),
            ratio(peak[k], peak[baseline]) if baseline else "n/a",
        ]
        for k, c in cases.items()
    ]
    targets = []
    if baseline is not None:
        name = "kubectl" if baseline == "kubectl" else "kubectl on PATH (not Debian's)"
        for key, goal in (("kdisco kubeconfig", 8.0), ("kdisco in-cluster", 4.0)):
            r = wall[key] / wall[baseline]
            targets.append(
                Target(
                    f"wall time: {key.replace('kdisco ', 'kdisco resolve, ')} / {name}",
                    f"≤ {goal:.0f}x",
                    f"{r:.2f}x ({ms(wall[key])} / {ms(wall[baseline])})",
                    r <= goal,
                )
            )
    for key in ("kdisco kubeconfig", "kdisco in-cluster"):
        targets.append(
            Target(
                f"peak RSS: {key.replace('kdisco ', 'kdisco resolve, ')} (worst run)",
                "≤ 60 MB",
                mb(worst[key]),
                worst[key] <= 60e6,
            )
        )
    n = len(cases["python"].runs)
    notes = [
        f"Medians of {n} runs of each process, interleaved round by round after one warm-up "
        "round (not counted). Wall time is from spawning the process until it is reaped, "
        "measured by the bench; peak is the process's own `ru_maxrss` as "
        + (
            f"`{TIME} -f %M` reports it"
            if os.access(TIME, os.X_OK)
            else "a small fork+exec launcher reports it (no /usr/bin/time here: ~8 MB floor)"
        )
        + " (a child forked straight from the bench would inherit the bench's own "
        "high-water mark). Ratios are to "
        + (cases[baseline].label if baseline else "no kubectl (none found)")
        + ".",
        f"The Service: headless, {ENDPOINTS} ready endpoints in one EndpointSlice, "
        "created by the bench. Commands (NS is the bench's namespace): "
        f"`{' '.join(Path(a).name if i == 0 else a for i, a in enumerate(resolve))}` "
        "(the `kdisco` script next to the bench's interpreter; default Discoverer, so the "
        "api strategy's watch cache is on), and "
        f"`kubectl {' '.join(get[:-1])} LAB_KUBECONFIG`.".replace(ns, "NS"),
        "Environment of every process: PATH, LANG, PYTHONPATH (the checkout) and a HOME "
        "of its own, nothing else. kdisco with a kubeconfig: `KUBECONFIG=` the lab's "
        "(a bearer token and the lab's CA file, as kubectl gets). In-cluster: "
        "`KUBERNETES_SERVICE_HOST=127.0.0.1`, `KUBERNETES_SERVICE_PORT=` the apiserver's, "
        "`KDISCO_SERVICEACCOUNT_DIR=` a directory with `token` (from the TokenRequest API "
        "for a ServiceAccount bound to README's Role: get/list/watch services, list/watch "
        "endpointslices), `ca.crt` (the lab's CA) and `namespace`; no KUBECONFIG, and an "
        "empty HOME so there is no `~/.kube/config` either.",
        "kubectl, discovery cache warm: HOME is kept across runs, so `~/.kube/cache` "
        "holds the API discovery documents and kubectl sends one request (the LIST). "
        "Discovery cache empty: a new HOME each run, so kubectl first fetches the API "
        "discovery documents (kubectl 1.20 asks for each API group-version separately; "
        "newer ones use aggregated discovery, two requests). Every output is parsed and "
        "must list the Service's endpoints.",
    ]
    if debian is not None:
        notes.append(
            f"Debian's kubectl: {debian.path} ({debian.origin}). It is kubectl "
            f"{debian.version}, far outside the version skew kubectl supports with this "
            "kube-apiserver (one minor version); it reads EndpointSlices v1 correctly, "
            "and its start-up (a Go binary) is what the comparison is about. The bench "
            "never installs it system-wide: where `/usr/bin/kubectl` belongs to another "
            "package (Google Cloud's `kubectl` on the machine this was written on), "
            "dpkg would have to overwrite it; see bench/_kubectl.py."
        )
    else:
        notes.append(
            "Debian's kubectl (package kubernetes-client) was not available (see "
            "bench/_kubectl.py): the baseline is the kubectl on PATH."
        )
    if path_kubectl is not None and "kubectl on PATH" in cases:
        notes.append(
            f"kubectl on PATH: {path_kubectl.origin}, client version {path_kubectl.version}; "
            "shown for reference."
        )
    return Section(
        8,
        "Whole process: `kdisco resolve` next to `kubectl get endpointslices` (cold start)",
        [
            "process",
            "median wall",
            "wall / kubectl",
            "peak RSS (median)",
            "peak RSS (worst)",
            "peak / kubectl",
        ],
        rows,
        targets=targets,
        notes=notes,
    )


# -- benchmark 9 ------------------------------------------------------------------------

FRESH = Path(__file__).with_name("_fresh.py")

#: label -> (mode for bench/_fresh.py, whether the TLS target applies)
MODES = {
    "dns (lab CoreDNS via KDISCO_DNS_SERVER)": "dns",
    "env (a synthetic pod environment, environ=)": "env",
    "api direct (api_watch=False), kubeconfig": "api-direct:kubeconfig",
    "api with the watch cache (default), kubeconfig": "api-watch:kubeconfig",
    "api direct (api_watch=False), in-cluster": "api-direct:in-cluster",
    "api with the watch cache (default), in-cluster": "api-watch:in-cluster",
}


def pod_environ() -> dict[str, str]:
    """What the kubelet gives a pod in namespace ``app``: two ClusterIP Services'
    variables (addresses are data, never connected to) and the in-cluster ones."""
    services = [
        {
            "metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
        },
        {
            "metadata": {"name": "web"},
            "spec": {
                "clusterIP": "10.96.7.7",
                "ports": [{"name": "http", "port": 80}, {"name": "grpc", "port": 9090}],
            },
        },
    ]
    return {
        "HOSTNAME": "app-7d9c-x2x5q",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "POD_NAMESPACE": "app",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        **kubelet_env(services),
    }


def _args_key(mode: str) -> str:
    return mode if mode in ("dns", "env") else mode.partition(":")[2]


def _fresh_run(mode: str, args: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH.read_text(), mode, json.dumps(args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fresh interpreter ({mode}) failed: {proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


@dataclass
class Imported:
    module: str
    self_us: int
    cumulative_us: int
    depth: int  # 0: imported by the code itself, 1: by such a module, ...


def import_times(argv: list[str], env: dict[str, str], after: str | None = None) -> list[Imported]:
    """What ``python -X importtime`` reports for ``argv`` (all of it, or only what
    follows the line ``after`` on stderr)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = proc.stderr.splitlines()
    if after is not None:
        lines = lines[lines.index(after) + 1 :]
    out = []
    for line in lines:
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m:
            depth = (len(m.group(3)) - 1) // 2
            out.append(Imported(m.group(4), int(m.group(1)), int(m.group(2)), depth))
    return out


def bench_fresh(settings: Settings) -> Section:
    runs = settings.n(7, 3)
    lab = settings.lab
    ns, svc = cold_service(settings)
    probe = kdisco.Discoverer(strategies=["dns"], dns_server=lab.dns_server, namespace=ns)
    _wait_for_dns(probe, svc)  # CoreDNS has seen the Service (~0.1 s)
    probe.close()
    with _workdir() as tmp:
        sa = serviceaccount_dir(settings, tmp / "serviceaccount")
        home = tmp / "home"
        home.mkdir()
        env = base_env(home)
        common = {"name": f"{svc}.{ns}", "apiserver_url": lab.apiserver_url, "ca": str(lab.ca_path)}
        args = {
            "dns": {**common, "environ": {"KDISCO_DNS_SERVER": lab.dns_server}},
            "env": {**common, "name": "web", "environ": pod_environ()},
            "kubeconfig": {**common, "kubeconfig": str(lab.kubeconfig)},
            "in-cluster": {
                **common,
                "serviceaccount_dir": str(sa),
                "environ": {**incluster_env(lab), "KDISCO_SERVICEACCOUNT_DIR": str(sa)},
            },
        }
        expect = {"dns": ENDPOINTS, "env": 1}
        progress(f"9: {runs} rounds of {len(MODES)} fresh interpreters (one warm-up first)")
        results: dict[str, list[dict[str, Any]]] = {label: [] for label in MODES}
        stop = time.monotonic() + 150
        for round_ in range(runs + 1):
            for label, mode in MODES.items():
                got = _fresh_run(mode, args[_args_key(mode)], env)
                want = expect.get(mode, ENDPOINTS)
                if got["endpoints"] != [want, want]:
                    raise RuntimeError(f"{mode}: found {got['endpoints']}, expected {want} twice")
                if round_:  # round 0 compiles .pyc files and warms the page cache
                    results[label].append(got)
            if round_ and time.monotonic() > stop:
                break
        importtime = import_times(["-c", "import kdisco"], env)
        first_imports = {
            label: import_times(
                ["-c", FRESH.read_text(), mode, json.dumps(args[_args_key(mode)])],
                env,
                after=MARKER,
            )
            for label, mode in MODES.items()
            if mode in ("dns", "api-direct:kubeconfig", "api-direct:in-cluster")
        }
    every = [r for rs in results.values() for r in rs]
    imp = median([r["import"] for r in every])
    added = sorted({r["added"] for r in every})
    watched = sorted({m for r in every for m in r["watched"]})
    rows = [
        [
            "`import kdisco` (alone, before anything else)",
            ms(imp),
            "—",
            "—",
            "—",
            "—",
        ]
    ]
    targets = [Target("`import kdisco` in a fresh interpreter", "≤ 60 ms", ms(imp), imp <= 0.060)]
    for label, mode in MODES.items():
        rs = results[label]
        first, second = median([r["first"] for r in rs]), median([r["second"] for r in rs])
        tls = median([r["tls"] for r in rs]) if mode.startswith("api") else None
        bound = 3 * second + tls if tls is not None else None
        rows.append(
            [
                label,
                ms(first),
                ms(second),
                ratio(first, second),
                ms(tls) if tls is not None else "—",
                ms(bound) if bound is not None else "—",
            ]
        )
        if bound is not None:
            targets.append(
                Target(
                    f"first lookup, {label} ≤ 3 * second + TLS handshake",
                    "≤ 1.00",
                    f"{first / bound:.2f} ({ms(first)} vs {ms(bound)})",
                    first <= bound,
                )
            )
    n = len(every)
    top = sorted(importtime, key=lambda i: i.self_us, reverse=True)[:10]
    first_rows = []
    for label, imported in first_imports.items():
        total = sum(i.cumulative_us for i in imported if i.depth == 0)
        packages: dict[str, int] = {}
        for i in imported:
            top_level = i.module.split(".")[0]
            packages[top_level] = packages.get(top_level, 0) + i.self_us
        largest = sorted(packages.items(), key=lambda kv: kv[1], reverse=True)[:8]
        first_rows.append(
            [
                label,
                f"{total / 1e3:.0f} ms",
                str(len(imported)),
                ", ".join(f"`{name}` {us / 1e3:.0f} ms" for name, us in largest),
            ]
        )
    return Section(
        9,
        "Fresh interpreter: `import kdisco`, then the first and second lookups",
        [
            "what",
            "first lookup (new Discoverer, first in the process)",
            "second lookup (another new Discoverer)",
            "first / second",
            "bare TLS handshake",
            "3 * second + TLS",
        ],
        rows,
        targets=targets,
        extra_tables=[
            (
                "Slowest modules under `import kdisco` by their own import time "
                "(`python -X importtime -c 'import kdisco'`, one run; the flag's own "
                "overhead inflates every figure):",
                ["module", "self", "cumulative"],
                [
                    [i.module, f"{i.self_us / 1e3:.1f} ms", f"{i.cumulative_us / 1e3:.1f} ms"]
                    for i in top
                ],
            ),
            (
                "What the first lookup imports (`python -X importtime`, one run, what is "
                "imported after `import kdisco`), and which packages that time goes to "
                "(own import time of their modules, summed):",
                ["first lookup", "import time", "modules", "by package"],
                first_rows,
            ),
        ],
        notes=[
            f"Each row's figures are medians of {len(next(iter(results.values())))} fresh "
            "interpreters (`python -c`, the bench's interpreter, run interleaved after one "
            "warm-up round); the `import kdisco` figure is the median over all "
            f"{n} of them, timed with `time.perf_counter()` around the import statement, "
            "before anything else is imported.",
            f"`import kdisco` added {', '.join(map(str, added))} modules to `sys.modules`; "
            "of dns, kubernetes, urllib3, yaml and tomllib it loaded "
            + (", ".join(f"`{m}`" for m in watched) if watched else "none")
            + ".",
            "First lookup: `Discoverer(...)` built and its first `discover()` made, in a "
            "process that has made none (the strategy's modules, its client and its first "
            "connection are paid here). Second: a new `Discoverer` in the same process, "
            "the first closed, so no cache of the first answers it (with the watch cache "
            "the second Discoverer makes its own first list and watch); only what is "
            "per process (imports, the cut-off thread) is already there.",
            "Bare TLS handshake (api rows): in the same child, after the lookups, a new "
            "`ssl.create_default_context(cafile=lab CA)`, a TCP connect to the apiserver "
            "on 127.0.0.1 and the handshake (median of 3). Target: the first api lookup "
            "costs at most three second lookups plus that handshake.",
            "dns: `environ={'KDISCO_DNS_SERVER': lab}`, the headless Service (5 ready "
            "endpoints). env: `environ=` a pod's variables as the kubelet writes them "
            "(ClusterIP Service `web`, `POD_NAMESPACE`); no I/O. api: the same headless "
            "Service; kubeconfig: `kubeconfig=` the lab's, `environ={}`; in-cluster: "
            "`KUBERNETES_SERVICE_HOST/PORT` and a service-account directory (TokenRequest "
            "token, README's Role).",
        ],
    )
