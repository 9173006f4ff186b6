"""Start and stop a local lab: etcd + kube-apiserver + kube-controller-manager +
CoreDNS on 127.0.0.1.

Every process is started in its own session (process group) and stopped by
the pid recorded when it was started (checked against its start time so a
recycled pid is never signalled).  Processes started for a test session also
get ``PR_SET_PDEATHSIG`` so they die with the Python process even on SIGKILL.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from lab import build as _build
from lab.versions import VERSIONS

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_CIDR_V4 = "10.96.0.0/16"
SERVICE_CIDR_V6 = "fd00:10:96::/112"
ADMIN_USER = "kdisco-lab-admin"
#: The controllers kube-controller-manager runs in the lab (v1.35 long names):
#: EndpointSlices from Pods and from custom Endpoints, namespace deletion, the
#: ``default`` ServiceAccounts and their token Secrets, ownerReference clean-up.
CONTROLLERS = (
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "garbage-collector-controller",
)
#: The value of ``endpointslice.kubernetes.io/managed-by`` on the controller's slices.
CONTROLLER_MANAGED_BY = "endpointslice-controller.k8s.io"
_PROBE_SERVICE = "kdisco-lab-probe"


class LabError(RuntimeError):
    pass


def state_dir() -> Path:
    """The state directory of ``python -m lab up`` (``$KDISCO_LAB_STATE`` or ``<repo>/.lab``)."""
    env = os.environ.get("KDISCO_LAB_STATE")
    return Path(env).resolve() if env else REPO_ROOT / ".lab"


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    """A free TCP port on 127.0.0.1 that is also free for UDP."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port: int = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind((LOOPBACK, port))
        except OSError:
            continue
        return port
    raise LabError("no free port on 127.0.0.1")


def _proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of *pid*, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # fields after the ")" of the command name; starttime is field 22
    fields = data[data.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def _pid_alive(pid: int, start_time: int | None) -> bool:
    st = _proc_start_time(pid)
    return st is not None and (start_time is None or st == start_time)


def _is_loopback_url(url: str) -> bool:
    from urllib.parse import urlparse

    host = urlparse(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def dns_probe(
    host: str, port: int, name: str, qtype: int = 1, timeout: float = 1.0
) -> tuple[int, int]:
    """Send one UDP DNS query; return (rcode, answer count).  Stdlib only."""
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise LabError(f"refusing to query non-loopback DNS server {host}")
    qid = secrets.randbits(16)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\x00" + struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (host, port))
        deadline = time.monotonic() + timeout
        while True:
            data, _ = s.recvfrom(4096)
            rid, flags, _qd, an = struct.unpack(">HHHH", data[:8])
            if rid == qid:
                return flags & 0xF, an
            if time.monotonic() > deadline:
                raise TimeoutError("no matching DNS reply")


def _ssl_context(ca_path: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_path))


def _open(
    req: urllib.request.Request, *, timeout: float, context: ssl.SSLContext | None = None
) -> Any:
    """urlopen that ignores *_proxy variables: lab traffic stays on loopback."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers).open(req, timeout=timeout)


def _http_get(
    url: str, *, ca: Path | None = None, token: str | None = None, timeout: float = 2.0
) -> tuple[int, str]:
    if not _is_loopback_url(url):
        raise LabError(f"refusing to connect to non-loopback URL {url}")
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    ctx = _ssl_context(ca) if ca else None
    try:
        with _open(req, timeout=timeout, context=ctx) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def _etcd_post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to etcd's JSON gateway (loopback only)."""
    if not _is_loopback_url(url):
        raise LabError(f"refusing non-loopback URL {url}")
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    with _open(req, timeout=5) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


_LAUNCHER = """
import os, subprocess, sys
log, cwd, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
with open(log, "ab") as fh:
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                         cwd=cwd, start_new_session=True, close_fds=True)
print(p.pid, flush=True)
os._exit(0)
"""


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


# ---------------------------------------------------------------- public types


@dataclasses.dataclass(frozen=True)
class LabInfo:
    """How to reach a running lab.  All addresses are on 127.0.0.1."""

    kubeconfig: Path
    apiserver_url: str
    ca_path: Path
    token: str
    dns_host: str
    dns_port: int
    cluster_domain: str = CLUSTER_DOMAIN
    dns_ready_url: str | None = None
    dual_stack: bool = False
    workdir: Path | None = None
    etcd_url: str | None = None
    #: kube-controller-manager's health endpoint (None: the lab runs none).
    controller_manager_url: str | None = None
    _lab: Lab | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def dns_server(self) -> str:
        return f"{self.dns_host}:{self.dns_port}"

    def env(self) -> dict[str, str]:
        """The variables written to ``.lab/lab.env``."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KDISCO_DNS_SERVER": self.dns_server,
            "KDISCO_CLUSTER_DOMAIN": self.cluster_domain,
        }

    def apiserver_ready(self, timeout: float = 2.0) -> bool:
        try:
            code, body = _http_get(
                self.apiserver_url + "/readyz", ca=self.ca_path, token=self.token, timeout=timeout
            )
        except (OSError, ssl.SSLError):
            return False
        return code == 200 and body.strip() == "ok"

    def dns_ready(self, timeout: float = 1.0) -> bool:
        """True if CoreDNS answers NOERROR with an address for the kubernetes Service."""
        if self.dns_ready_url:
            try:
                code, _ = _http_get(self.dns_ready_url, timeout=timeout)
            except OSError:
                return False
            if code != 200:
                return False
        try:
            rcode, an = dns_probe(
                self.dns_host,
                self.dns_port,
                f"kubernetes.default.svc.{self.cluster_domain}",
                timeout=timeout,
            )
        except OSError:
            return False
        return rcode == 0 and an > 0

    def controller_manager_ready(self, timeout: float = 2.0) -> bool:
        """True if kube-controller-manager answers ``/healthz`` with ``ok``."""
        if not self.controller_manager_url:
            return False
        try:
            code, body = _http_get(
                self.controller_manager_url + "/healthz", ca=self.ca_path, timeout=timeout
            )
        except (OSError, ssl.SSLError):
            return False
        return code == 200 and body.strip() == "ok"

    def ready(self) -> bool:
        """Every server answers (a lab without a controller-manager is not ready:
        tests read controller-made EndpointSlices)."""
        return self.apiserver_ready() and self.dns_ready() and self.controller_manager_ready()

    def compact_etcd(self) -> int:
        """Compact etcd up to its current revision (makes older watches get 410 Gone).

        Returns the revision compacted to.  Needs a lab started by this package.
        """
        if not self.etcd_url or not _is_loopback_url(self.etcd_url):
            raise LabError("etcd URL unknown for this lab")
        rev = int(_etcd_post(self.etcd_url + "/v3/kv/range", {"key": "AA=="})["header"]["revision"])
        _etcd_post(self.etcd_url + "/v3/kv/compaction", {"revision": str(rev), "physical": True})
        return rev

    def _controller(self) -> Lab:
        if self._lab is not None:
            return self._lab
        if self.workdir is not None and (self.workdir / "state.json").is_file():
            lab = Lab.from_state(self.workdir)
            object.__setattr__(self, "_lab", lab)
            return lab
        raise LabError(
            "this lab was not started by lab.Lab / python -m lab up: cannot control its CoreDNS"
        )

    def stop_dns(self) -> None:
        """Stop the lab's CoreDNS (the port then refuses / times out)."""
        self._controller().stop_dns()

    def start_dns(self, timeout: float = 60.0) -> None:
        """Start CoreDNS again on the same port and wait until it answers."""
        self._controller().start_dns(timeout=timeout)

    def restart_apiserver(self, timeout: float = 60.0, grace: float = 2.0) -> None:
        """Restart kube-apiserver on the same port and wait for /readyz."""
        self._controller().restart_apiserver(timeout=timeout, grace=grace)


@dataclasses.dataclass
class _Proc:
    name: str
    pid: int
    start_time: int | None
    log: str
    popen: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return _pid_alive(self.pid, self.start_time)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group we created, then SIGKILL after *timeout*."""
        if not self.alive():
            self._reap()
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)  # pid == pgid: started with start_new_session
            except ProcessLookupError:
                break
            except PermissionError:
                os.kill(self.pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self._reap()
                if not self.alive():
                    self._reap()
                    return
                time.sleep(0.05)
        self._reap()

    def _reap(self) -> None:
        if self.popen is not None:
            with contextlib.suppress(Exception):
                self.popen.poll()
                if self.popen.returncode is None and not _pid_alive(self.pid, self.start_time):
                    # Exited (a zombie, or about to be): collect it, or the Popen's
                    # finalizer warns that it is "still running".
                    self.popen.wait(timeout=5)

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_time": self.start_time, "log": self.log}


# ---------------------------------------------------------------- the lab


class Lab:
    """A local etcd + kube-apiserver + kube-controller-manager + CoreDNS.

    ``Lab(workdir=None, detached=False, dual_stack=True)``; ``start()``,
    ``stop()``, ``stop_dns()``, ``start_dns()``, ``info``.  With
    ``detached=True`` (``python -m lab up``) the processes outlive Python and
    their pids are written to ``<workdir>/state.json``.
    """

    def __init__(
        self,
        workdir: Path | str | None = None,
        *,
        detached: bool = False,
        dual_stack: bool = True,
        cluster_domain: str = CLUSTER_DOMAIN,
        dns_ttl: int | None = None,
        watch_cache: bool = True,
        extra_apiserver_args: list[str] | None = None,
        verbose: bool = False,
    ) -> None:
        self._tmp = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="kdisco-lab-"))
        self.detached = detached
        self.dual_stack = dual_stack
        self.cluster_domain = cluster_domain
        self.dns_ttl = dns_ttl
        self.watch_cache = watch_cache
        self.extra_apiserver_args = list(extra_apiserver_args or [])
        self.verbose = verbose
        self.procs: dict[str, _Proc] = {}  # etcd, apiserver, controller-manager, coredns
        self.ports: dict[str, int] = {}
        self.token = ""
        self.info: LabInfo | None = None
        self.timings: dict[str, float] = {}
        self._lock = threading.RLock()
        self._kcm_started = 0.0
        self._atexit_registered = False

    # ------------------------------------------------------------ helpers
    def _say(self, msg: str) -> None:
        if self.verbose:
            print(f"[lab] {msg}", file=sys.stderr, flush=True)

    def _spawn(self, name: str, argv: list[str]) -> _Proc:
        logdir = self.workdir / "logs"
        logdir.mkdir(parents=True, exist_ok=True)
        log = logdir / f"{name}.log"
        self._say(f"starting {name}: {' '.join(argv)}")
        if self.detached:
            # Through a short-lived launcher: the server is reparented to init, so
            # this Python neither leaves a zombie nor holds a Popen for it.
            launcher = subprocess.run(
                [sys.executable, "-c", _LAUNCHER, str(log), str(self.workdir), *argv],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                check=False,
            )
            if launcher.returncode != 0 or not launcher.stdout.strip().isdigit():
                raise LabError(f"could not start {name}: {launcher.stderr.strip()}")
            pid = int(launcher.stdout.strip())
            proc = _Proc(name, pid, _proc_start_time(pid), str(log))
            self.procs[name] = proc
            self._write_state()
            return proc
        with open(log, "ab") as fh:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                close_fds=True,
                preexec_fn=_set_pdeathsig,
            )
        proc = _Proc(name, popen.pid, _proc_start_time(popen.pid), str(log), popen)
        self.procs[name] = proc
        self._write_state()
        return proc

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, procs: list[str]) -> None:
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            for p in procs:
                if not self.procs[p].alive():
                    raise LabError(
                        f"{p} exited while waiting for {what}; log tail:\n{self.log_tail(p)}"
                    )
            if check():
                self.timings[what] = round(time.monotonic() - t0, 2)
                self._say(f"{what} after {self.timings[what]}s")
                return
            if time.monotonic() > deadline:
                raise LabError(
                    f"timed out after {timeout}s waiting for {what}; "
                    f"log tail of {procs[-1]}:\n{self.log_tail(procs[-1])}"
                )
            time.sleep(0.1)

    def log_tail(self, name: str, lines: int = 30) -> str:
        proc = self.procs.get(name)
        path = Path(proc.log) if proc else self.workdir / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _write_state(self) -> None:
        if not self.detached:
            return
        state = {
            "workdir": str(self.workdir),
            "ports": self.ports,
            "dual_stack": self.dual_stack,
            "cluster_domain": self.cluster_domain,
            "dns_ttl": self.dns_ttl,
            "watch_cache": self.watch_cache,
            "extra_apiserver_args": self.extra_apiserver_args,
            "token": self.token,
            "versions": VERSIONS,
            "procs": {n: p.to_json() for n, p in self.procs.items()},
        }
        tmp = self.workdir / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.workdir / "state.json")

    @classmethod
    def from_state(cls, workdir: Path | str | None = None) -> Lab:
        """Re-attach to a lab started detached (``python -m lab up``)."""
        workdir = Path(workdir) if workdir else state_dir()
        state = json.loads((workdir / "state.json").read_text())
        lab = cls(
            workdir,
            detached=True,
            dual_stack=state.get("dual_stack", False),
            cluster_domain=state.get("cluster_domain", CLUSTER_DOMAIN),
            dns_ttl=state.get("dns_ttl"),
            watch_cache=state.get("watch_cache", True),
            extra_apiserver_args=state.get("extra_apiserver_args"),
        )
        lab.ports = {k: int(v) for k, v in state["ports"].items()}
        lab.token = state["token"]
        for name, p in state["procs"].items():
            lab.procs[name] = _Proc(name, int(p["pid"]), p.get("start_time"), p["log"])
        lab.info = lab._make_info()
        return lab

    def _make_info(self) -> LabInfo:
        return LabInfo(
            kubeconfig=self.workdir / "kubeconfig",
            apiserver_url=f"https://{LOOPBACK}:{self.ports['apiserver']}",
            ca_path=self.workdir / "pki" / "ca.crt",
            token=self.token,
            dns_host=LOOPBACK,
            dns_port=self.ports["dns"],
            cluster_domain=self.cluster_domain,
            dns_ready_url=f"http://{LOOPBACK}:{self.ports['dns_ready']}/ready",
            dual_stack=self.dual_stack,
            workdir=self.workdir,
            etcd_url=f"http://{LOOPBACK}:{self.ports['etcd']}",
            controller_manager_url=(
                f"https://{LOOPBACK}:{self.ports['controller_manager']}"
                if "controller_manager" in self.ports  # not in a lab from before it ran one
                else None
            ),
            _lab=self,
        )

    # ------------------------------------------------------------ start
    def start(self, timeout: float = 120.0) -> LabInfo:
        """Start etcd, kube-apiserver, kube-controller-manager and CoreDNS; return when
        all are ready (the controller-manager: when it has made a probe's EndpointSlice)."""
        t0 = time.monotonic()
        bins = {c: _build.binary_path(c) for c in _build.COMPONENTS}
        missing = [c for c, p in bins.items() if not p.is_file()]
        if missing:
            self._say(f"building missing binaries: {missing}")
            _build.build_all(missing)
        if not self.detached:
            self._install_cleanup()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            if self._tmp:
                _sweep_stale_tmp_dirs(self.workdir)
                (self.workdir / "owner.json").write_text(
                    json.dumps({"pid": os.getpid(), "start_time": _proc_start_time(os.getpid())})
                )
            from lab import _certs

            pki = self.workdir / "pki"
            certs = _certs.generate(pki, self.cluster_domain)
            self.token = secrets.token_hex(24)
            for key in ("etcd", "etcd_peer", "apiserver", "controller_manager", "dns", "dns_ready"):
                port = free_port()
                while port in self.ports.values():
                    port = free_port()
                self.ports[key] = port
            self.info = self._make_info()
            (pki / "tokens.csv").write_text(
                f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
            )
            (pki / "tokens.csv").chmod(0o600)
            self._write_kubeconfig(certs["ca_crt"])
            self._start_etcd(bins["etcd"])
            self._start_apiserver()
            self._wait("etcd healthy", self._etcd_healthy, 30, ["etcd"])
            self._wait(
                "apiserver ready",
                self._apiserver_ready_quick,
                timeout,
                ["etcd", "apiserver"],
            )
            # The controller-manager starts while CoreDNS starts; it is waited for after.
            self._start_controller_manager()
            self.start_dns(timeout=60)
            self._wait_controller_manager(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        self._write_state()
        return self.info

    def _apiserver_ready_quick(self) -> bool:
        return self.info is not None and self.info.apiserver_ready(1.0)

    def _dns_ready_quick(self) -> bool:
        return self.info is not None and self.info.dns_ready(0.5)

    def _etcd_healthy(self) -> bool:
        try:
            code, body = _http_get(f"http://{LOOPBACK}:{self.ports['etcd']}/health", timeout=1)
        except OSError:
            return False
        return code == 200 and '"health":"true"' in body.replace(" ", "")

    def _start_etcd(self, binary: Path) -> None:
        client = f"http://{LOOPBACK}:{self.ports['etcd']}"
        peer = f"http://{LOOPBACK}:{self.ports['etcd_peer']}"
        self._spawn(
            "etcd",
            [
                str(binary),
                "--name=lab",
                f"--data-dir={self.workdir / 'etcd-data'}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=lab={peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync",
                "--log-level=warn",
                "--quota-backend-bytes=2147483648",
            ],
        )

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        certs = {
            "apiserver_crt": pki / "apiserver.crt",
            "apiserver_key": pki / "apiserver.key",
            "ca_crt": pki / "ca.crt",
            "sa_pub": pki / "sa.pub",
            "sa_key": pki / "sa.key",
        }
        cidr = SERVICE_CIDR_V4 + ("," + SERVICE_CIDR_V6 if self.dual_stack else "")
        self._spawn(
            "apiserver",
            [
                str(_build.binary_path("kube-apiserver")),
                f"--etcd-servers=http://{LOOPBACK}:{self.ports['etcd']}",
                "--etcd-prefix=/kdisco-lab",
                f"--bind-address={LOOPBACK}",
                f"--advertise-address={LOOPBACK}",
                f"--secure-port={self.ports['apiserver']}",
                f"--cert-dir={self.workdir / 'pki' / 'apiserver'}",
                f"--tls-cert-file={certs['apiserver_crt']}",
                f"--tls-private-key-file={certs['apiserver_key']}",
                f"--client-ca-file={certs['ca_crt']}",
                f"--token-auth-file={self.workdir / 'pki' / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-cluster-ip-range={cidr}",
                f"--service-account-issuer=https://kubernetes.default.svc.{self.cluster_domain}",
                f"--service-account-key-file={certs['sa_pub']}",
                f"--service-account-signing-key-file={certs['sa_key']}",
                "--endpoint-reconciler-type=none",
                # Kept off although the serviceaccount controller now makes each new
                # namespace's `default` ServiceAccount: that comes a moment after the
                # namespace, and with the plugin on a Pod created in that moment is
                # refused (a race tests would have to wait out), and every Pod would
                # get a projected token volume no kubelet mounts here. Pods need no
                # ServiceAccount in the lab; in-cluster tests make their own.
                "--disable-admission-plugins=ServiceAccount",
                "--allow-privileged=true",
                "--profiling=false",
                f"--watch-cache={'true' if self.watch_cache else 'false'}",
                "--v=1",
                *self.extra_apiserver_args,
            ],
        )

    def _start_controller_manager(self) -> None:
        pki = self.workdir / "pki"
        self._kcm_started = time.monotonic()
        self._spawn(
            "controller-manager",
            [
                str(_build.binary_path("kube-controller-manager")),
                f"--kubeconfig={self.workdir / 'kubeconfig'}",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={self.ports['controller_manager']}",
                # The apiserver's serving certificate (SAN 127.0.0.1, signed by the lab
                # CA) serves here too, so /healthz is checked against the lab CA.
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                "--leader-elect=false",
                f"--controllers={','.join(CONTROLLERS)}",
                # The token controller signs legacy token Secrets with the key the
                # apiserver verifies, and puts the lab CA in them.
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                # No batching: a Pod change reaches its slice at once (the defaults,
                # written out because tests rely on them).
                "--endpointslice-updates-batch-period=0s",
                "--mirroring-endpointslice-updates-batch-period=0s",
                # The default 20 qps throttles creating ~120 Pods' slices.
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--profiling=false",
                "--v=1",
            ],
        )

    def _wait_controller_manager(self, timeout: float) -> None:
        """Wait for /healthz, then for the EndpointSlice controller to make the slice
        of a probe Service with a selector (healthz is ok before controllers sync)."""
        from lab import kube

        self._wait(
            "controller-manager healthy",
            lambda: self.info is not None and self.info.controller_manager_ready(1.0),
            timeout,
            ["apiserver", "controller-manager"],
        )
        assert self.info
        info = self.info
        base = "/api/v1/namespaces/default/services"
        kube.request(info, "DELETE", f"{base}/{_PROBE_SERVICE}", ok_statuses=(404,))
        kube.request(
            info,
            "POST",
            base,
            {
                "metadata": {"name": _PROBE_SERVICE},
                "spec": {
                    "clusterIP": "None",
                    "selector": {"kdisco-lab/probe": "none"},
                    "ports": [{"port": 1}],
                },
            },
        )
        selector = f"kubernetes.io/service-name={_PROBE_SERVICE}"
        slices = (
            f"/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector={selector}"
        )

        def made() -> bool:
            items = kube.request(info, "GET", slices).get("items") or []
            return any(
                (i["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
                == CONTROLLER_MANAGED_BY
                for i in items
            )

        self._wait("controller-manager slices", made, timeout, ["apiserver", "controller-manager"])
        # Its slice goes with it (the garbage collector follows the ownerReference).
        kube.request(info, "DELETE", f"{base}/{_PROBE_SERVICE}", ok_statuses=(404,))
        self.timings["controller-manager"] = round(time.monotonic() - self._kcm_started, 2)

    def restart_apiserver(self, timeout: float = 60.0, grace: float = 2.0) -> None:
        """Stop and start kube-apiserver on the same port (watches break; with the
        watch cache on, older resourceVersions then get 410 Gone).

        The apiserver is sent SIGTERM, then SIGKILL after *grace* seconds: with
        watch connections open (CoreDNS has some) it never exits on SIGTERM alone
        within 10 s.
        """
        with self._lock:
            proc = self.procs.get("apiserver")
            if proc:
                proc.stop(timeout=grace)
            self._start_apiserver()
            assert self.info
            self._wait(
                "apiserver ready",
                self._apiserver_ready_quick,
                timeout,
                ["etcd", "apiserver"],
            )
            self._write_state()

    def _write_kubeconfig(self, ca: Path) -> None:
        assert self.info
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "kdisco-lab",
                    "cluster": {
                        "server": self.info.apiserver_url,
                        "certificate-authority": str(ca),
                    },
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "kdisco-lab",
                    "context": {
                        "cluster": "kdisco-lab",
                        "user": ADMIN_USER,
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "kdisco-lab",
            "preferences": {},
        }
        path = self.workdir / "kubeconfig"
        path.write_text(json.dumps(cfg, indent=2) + "\n")  # JSON is valid YAML
        path.chmod(0o600)

    def _corefile(self) -> str:
        ttl = f"\n        ttl {self.dns_ttl}" if self.dns_ttl is not None else ""
        return (
            f".:{self.ports['dns']} {{\n"
            f"    bind {LOOPBACK}\n"
            "    errors\n"
            f"    ready {LOOPBACK}:{self.ports['dns_ready']}\n"
            f"    kubernetes {self.cluster_domain} in-addr.arpa ip6.arpa {{\n"
            f"        kubeconfig {self.workdir / 'kubeconfig'} kdisco-lab{ttl}\n"
            "    }\n"
            "}\n"
        )

    # ------------------------------------------------------------ DNS control
    def start_dns(self, timeout: float = 60.0) -> None:
        """(Re)start CoreDNS on the same port; return when it answers."""
        with self._lock:
            old = self.procs.get("coredns")
            if old and old.alive():
                return
            corefile = self.workdir / "Corefile"
            corefile.write_text(self._corefile())
            self._spawn(
                "coredns", [str(_build.binary_path("coredns")), "-conf", str(corefile), "-quiet"]
            )
            assert self.info
            self._wait("coredns ready", self._dns_ready_quick, timeout, ["coredns"])

    def stop_dns(self) -> None:
        """Stop CoreDNS only (queries then time out / are refused)."""
        with self._lock:
            proc = self.procs.get("coredns")
            if proc:
                proc.stop()

    # ------------------------------------------------------------ stop
    def stop(self, remove: bool | None = None) -> None:
        """Stop every process this lab started (CoreDNS, controller-manager, apiserver, etcd)."""
        with self._lock:
            for name in ("coredns", "controller-manager", "apiserver", "etcd"):
                proc = self.procs.get(name)
                if proc:
                    proc.stop(timeout=3.0 if name == "apiserver" else 10.0)
            if remove is None:
                remove = self._tmp
            if remove:
                shutil.rmtree(self.workdir, ignore_errors=True)
            elif self.detached:
                shutil.rmtree(self.workdir / "etcd-data", ignore_errors=True)
                with contextlib.suppress(OSError):
                    (self.workdir / "state.json").unlink()
                with contextlib.suppress(OSError):
                    (self.workdir / "lab.env").unlink()

    def alive(self) -> dict[str, bool]:
        return {n: p.alive() for n, p in self.procs.items()}

    def _install_cleanup(self) -> None:
        if self._atexit_registered:
            return
        self._atexit_registered = True
        atexit.register(self.stop)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) in (signal.SIG_DFL, None):
                    signal.signal(sig, _raise_system_exit)

    def __enter__(self) -> LabInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _sweep_stale_tmp_dirs(current: Path) -> None:
    """Remove temp lab dirs left by a Python process that was SIGKILLed."""
    for d in current.parent.glob("kdisco-lab-*"):
        if d == current or not d.is_dir():
            continue
        try:
            owner = json.loads((d / "owner.json").read_text())
            if _pid_alive(int(owner["pid"]), owner.get("start_time")):
                continue
            if time.time() - d.stat().st_mtime < 30:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
        shutil.rmtree(d, ignore_errors=True)


def _raise_system_exit(signum: int, frame: object) -> NoReturn:  # turn SIGTERM into a clean unwind
    raise SystemExit(128 + signum)


# ---------------------------------------------------------------- reuse / fixture


def _read_env_file(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    return env


def _info_from_env(env: dict[str, str]) -> LabInfo | None:
    """LabInfo for a lab described by KUBECONFIG + KDISCO_DNS_SERVER, if it is ours.

    Only kubeconfigs pointing at 127.0.0.1 with a bearer token and a CA file
    are accepted, and only a DNS server on 127.0.0.1: never a real cluster.
    """
    kc, dns = env.get("KUBECONFIG"), env.get("KDISCO_DNS_SERVER")
    if not kc or not dns or os.pathsep in kc:
        return None
    host, _, port = dns.rpartition(":")
    if host != LOOPBACK or not port.isdigit():
        return None
    try:
        text = Path(kc).read_text()
        cfg = json.loads(text)  # the lab writes JSON; a YAML kubeconfig is not ours
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
        server, ca, token = cluster["server"], cluster["certificate-authority"], user["token"]
    except (OSError, KeyError, StopIteration, TypeError, ValueError):
        return None
    if not server.startswith(f"https://{LOOPBACK}:"):
        return None
    ready_url, workdir, dual, etcd_url, kcm_url = None, None, False, None, None
    state = Path(kc).parent / "state.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        st = json.loads(state.read_text())
        ready_url = f"http://{LOOPBACK}:{int(st['ports']['dns_ready'])}/ready"
        dual = bool(st.get("dual_stack"))
        etcd_url = f"http://{LOOPBACK}:{int(st['ports']['etcd'])}"
        workdir = state.parent
        kcm_url = f"https://{LOOPBACK}:{int(st['ports']['controller_manager'])}"
    return LabInfo(
        kubeconfig=Path(kc),
        apiserver_url=server,
        ca_path=Path(ca),
        token=token,
        dns_host=host,
        dns_port=int(port),
        cluster_domain=env.get("KDISCO_CLUSTER_DOMAIN", CLUSTER_DOMAIN),
        dns_ready_url=ready_url,
        dual_stack=dual,
        workdir=workdir,
        etcd_url=etcd_url,
        controller_manager_url=kcm_url,
    )


def find_running_lab() -> LabInfo | None:
    """A running, answering lab from the environment or ``.lab/lab.env``, else None."""
    candidates = [dict(os.environ)]
    env_file = state_dir() / "lab.env"
    if env_file.is_file():
        with contextlib.suppress(OSError):
            candidates.append(_read_env_file(env_file))
    for env in candidates:
        info = _info_from_env(env)
        if info is not None and info.ready():
            return info
    return None


@contextlib.contextmanager
def ensure_lab(
    *, reuse: bool = True, verbose: bool = True, timeout: float = 120.0, **lab_options: Any
) -> Iterator[LabInfo]:
    """Yield a running lab: reuse an answering one, else start one and stop it after.

    *lab_options* go to :class:`Lab` (``dual_stack``, ``dns_ttl``, ``watch_cache``,
    ``extra_apiserver_args``...); passing any disables reuse, as does the
    environment variable ``KDISCO_LAB_REUSE=0``.
    """
    if reuse and not lab_options and os.environ.get("KDISCO_LAB_REUSE", "1") != "0":
        info = find_running_lab()
        if info is not None:
            yield info
            return
    lab = Lab(verbose=verbose, **lab_options)
    try:
        info = lab.start(timeout=timeout)
        yield info
    finally:
        lab.stop()
