"""Which kubectl benchmark 8 compares with: Debian's, from the ``kubernetes-client`` package.

Issue 13 asks for Debian's kubectl. A ``kubectl`` on PATH is not necessarily that one:
on the machine the benchmarks were written on, ``/usr/bin/kubectl`` is the Google Cloud
SDK's (package ``kubectl``, ``v1.32.4-dispatcher``). Installing ``kubernetes-client``
system-wide there would make dpkg overwrite ``/usr/bin/kubectl``, which belongs to that
other package, so the bench never installs anything system-wide. Instead, when no
Debian kubectl is found (neither on PATH, owned by ``kubernetes-client`` per
``dpkg -S``, nor in the bench's cache), it fetches the package with its ordinary client,
``apt-get download kubernetes-client`` (as any user, from the configured Debian
mirrors), and unpacks it with ``dpkg-deb -x`` into ``$KDISCO_BENCH_CACHE``
(default ``~/.cache/kdisco-bench``). Nothing outside that directory changes.

``KDISCO_BENCH_KUBECTL=/path/to/kubectl`` uses that binary instead and fetches nothing;
``KDISCO_BENCH_KUBECTL=none`` uses no Debian kubectl (the kubectl on PATH is then the
baseline, and the report says so).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ._common import progress

PACKAGE = "kubernetes-client"


@dataclass
class Kubectl:
    path: str
    version: str
    origin: str  # how it was found, for the report


def cache_dir() -> Path:
    env = os.environ.get("KDISCO_BENCH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kdisco-bench"


def client_version(path: str) -> str:
    """``v1.20.2`` (old ``version.Info{...}`` output) or ``v1.32.4-dispatcher`` (new)."""
    try:
        out = subprocess.run(
            [path, "version", "--client"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={"PATH": os.environ.get("PATH", ""), "HOME": tempfile.gettempdir()},
        ).stdout
    except OSError as exc:
        return f"unknown ({exc})"
    m = re.search(r'GitVersion:"([^"]+)"', out) or re.search(r"Client Version:\s*(\S+)", out)
    return m.group(1) if m else "unknown"


def owner(path: str) -> str | None:
    """The Debian package that ships ``path`` (or the file it links to), if any."""
    if shutil.which("dpkg") is None:
        return None
    for candidate in dict.fromkeys([path, os.path.realpath(path)]):
        proc = subprocess.run(
            ["dpkg", "-S", candidate], capture_output=True, text=True, timeout=30, check=False
        )
        if proc.returncode == 0 and proc.stdout:
            return proc.stdout.split(":", 1)[0].strip()
    return None


def on_path() -> Kubectl | None:
    path = shutil.which("kubectl")
    if path is None:
        return None
    pkg = owner(path)
    real = os.path.realpath(path)
    where = path if real == path else f"{path} → {real}"
    return Kubectl(
        path,
        client_version(path),
        f"on PATH ({where}, " + (f"package {pkg})" if pkg else "no Debian package)"),
    )


def _fetch(dest: Path) -> str:
    """``apt-get download`` + ``dpkg-deb -x`` into ``dest``; returns the package version."""
    with tempfile.TemporaryDirectory(prefix="kdisco-bench-deb-") as tmp:
        proc = subprocess.run(
            ["apt-get", "download", PACKAGE],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        debs = sorted(Path(tmp).glob(f"{PACKAGE}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise RuntimeError(
                f"apt-get download {PACKAGE} failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-500:]} (are the package lists there? apt-get update)"
            )
        version = subprocess.run(
            ["dpkg-deb", "-f", str(debs[0]), "Version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(partial)], timeout=300, check=True)
        (partial / "VERSION").write_text(version + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        partial.rename(dest)
        return version


def debian() -> Kubectl | None:
    """Debian's kubectl: the override, the installed package, the cached one, or fetched."""
    override = os.environ.get("KDISCO_BENCH_KUBECTL", "")
    if override == "none":
        return None
    if override:
        return Kubectl(override, client_version(override), "KDISCO_BENCH_KUBECTL")
    found = shutil.which("kubectl")
    if found is not None and owner(found) == PACKAGE:
        return Kubectl(found, client_version(found), f"{found}, installed package {PACKAGE}")
    dest = cache_dir() / PACKAGE
    binary = dest / "usr" / "bin" / "kubectl"
    if not binary.is_file():
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            progress("8: no apt-get/dpkg-deb here: cannot fetch Debian's kubectl")
            return None
        progress(f"8: fetching Debian's {PACKAGE} (apt-get download) into {dest}")
        try:
            _fetch(dest)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            progress(f"8: could not fetch {PACKAGE}: {exc}")
            return None
    package_version = (dest / "VERSION").read_text().strip()
    return Kubectl(
        str(binary),
        client_version(str(binary)),
        f"Debian package {PACKAGE} {package_version}, unpacked by the bench into {dest}",
    )
