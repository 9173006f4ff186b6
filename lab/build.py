"""Build the lab's servers (etcd, kube-apiserver, kube-controller-manager, CoreDNS) from source.

Stdlib only.  Usage (from the repository root)::

    python lab/build.py                      # build whatever is missing
    python lab/build.py --component etcd     # one component (repeatable)
    python lab/build.py --regen              # regenerate wrapper go.mod/go.sum
    python lab/build.py --force              # rebuild even if cached
    python lab/build.py --print-paths        # show binary paths, build nothing

Each component is built from a small wrapper Go module in
``lab/go/<component>/`` whose go.mod has a ``tool`` directive naming the
upstream main package.  The go.mod/go.sum are committed for
reproducibility; they are regenerated when the pinned version in
``lab/versions.py`` no longer matches (or with ``--regen``).

kube-apiserver needs special care: k8s.io/kubernetes replaces every
k8s.io/<lib> staging module with a local folder and requires it at
v0.0.0.  The generator reads the upstream go.mod (``go mod download -json
k8s.io/kubernetes@vX``) and replaces each such module with the published
``v0.Y.Z`` tag instead (kubernetes/kubernetes#79384).  kube-controller-manager
is built from that same wrapper module (one ``tool`` line each), so both come
from the same release and share one go.sum and most of the build cache.

Binaries go to ``$KDISCO_LAB_CACHE/bin/<component>-<version>/<binary>``
(default ``~/.cache/kdisco-lab``), never into the repository.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``lab`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lab.versions import VERSIONS

LAB_DIR = Path(__file__).resolve().parent
GO_DIR = LAB_DIR / "go"

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "coredns")

# component -> (module, main package, binary name)
_SPEC = {
    "etcd": ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3", "etcd"),
    "kube-apiserver": (
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "kube-apiserver",
    ),
    "kube-controller-manager": (
        "k8s.io/kubernetes",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-controller-manager",
    ),
    "coredns": ("github.com/coredns/coredns", "github.com/coredns/coredns", "coredns"),
}

#: Components built from another one's wrapper module (lab/go/<that one>/).
_WRAPPER = {"kube-controller-manager": "kube-apiserver"}


def _wrapper(component: str) -> str:
    return _WRAPPER.get(component, component)


def _tools(wrapper: str) -> list[str]:
    """The main packages a wrapper module builds (its ``tool`` lines)."""
    return [_SPEC[c][1] for c in COMPONENTS if _wrapper(c) == wrapper]


class BuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    env = os.environ.get("KDISCO_LAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "kdisco-lab"


def binary_path(component: str, version: str | None = None) -> Path:
    version = version or VERSIONS[component]
    return cache_dir() / "bin" / f"{component}-{version}" / _SPEC[component][2]


def binaries_present() -> bool:
    return all(binary_path(c).is_file() for c in COMPONENTS)


def _log(msg: str) -> None:
    print(f"[lab build] {msg}", flush=True)


def _go_env(mod: str = "mod") -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    # -mod=mod only while generating go.mod/go.sum; builds use the committed
    # files read-only so a build never dirties the work tree.
    env["GOFLAGS"] = f"-mod={mod} -buildvcs=false"
    env.setdefault("GOTOOLCHAIN", "local")
    env.setdefault("GOPROXY", "https://proxy.golang.org")
    return env


def _run(cmd: list[str], cwd: Path, log_file: Path | None = None) -> str:
    _log("$ " + " ".join(cmd) + f"   (in {cwd})")
    proc = subprocess.run(cmd, cwd=cwd, env=_go_env(), capture_output=True, text=True)
    if log_file is not None:
        with log_file.open("a") as fh:
            fh.write(proc.stdout)
            fh.write(proc.stderr)
    if proc.returncode != 0:
        raise BuildError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


# ---------------------------------------------------------------- go.mod gen


def _upstream_gomod(module: str, version: str) -> str:
    out = _run(["go", "mod", "download", "-json", f"{module}@{version}"], cwd=Path.cwd())
    info = json.loads(out)
    if info.get("Error"):
        raise BuildError(f"go mod download {module}@{version}: {info['Error']}")
    return Path(info["GoMod"]).read_text()


def _staging_replaces(upstream: str, k8s_version: str) -> list[str]:
    """Replace lines for every staging module of k8s.io/kubernetes."""
    m = re.fullmatch(r"v1\.(\d+)\.(\d+)", k8s_version)
    if not m:
        raise BuildError(f"unexpected kubernetes version {k8s_version!r}")
    lib_version = f"v0.{m.group(1)}.{m.group(2)}"
    mods = sorted(set(re.findall(r"^\s*(k8s\.io/[\w.\-/]+)\s*=>\s*\./staging/", upstream, re.M)))
    if not mods:
        raise BuildError("no staging replace directives found in upstream go.mod")
    return [f"\t{mod} => {mod} {lib_version}" for mod in mods]


def _go_directive(upstream: str) -> tuple[str, str]:
    go = re.search(r"^go\s+(\S+)", upstream, re.M)
    godebug = re.search(r"^godebug\s+.*$", upstream, re.M)
    return (go.group(1) if go else "1.25.0", godebug.group(0) if godebug else "")


def generate_gomod(component: str) -> None:
    """Write the wrapper go.mod (lab/go/<wrapper>/) for the pinned version and tidy it."""
    component = _wrapper(component)
    module = _SPEC[component][0]
    version = VERSIONS[component]
    wdir = GO_DIR / component
    wdir.mkdir(parents=True, exist_ok=True)
    upstream = _upstream_gomod(module, version)
    go_version, godebug = _go_directive(upstream)
    lines = [
        "// Code generated by lab/build.py; DO NOT EDIT.",
        f"// Wrapper module to build {', '.join(_tools(component))} at {version}.",
        f"module kdisco.lab/{component}",
        "",
        f"go {go_version}",
        "",
    ]
    if godebug:
        lines += [godebug, ""]
    lines += [f"require {module} {version}", ""]
    if component == "kube-apiserver":
        lines += ["replace (", *_staging_replaces(upstream, version), ")", ""]
    lines += [*(f"tool {tool}" for tool in _tools(component)), ""]
    (wdir / "go.mod").write_text("\n".join(lines))
    (wdir / "go.sum").unlink(missing_ok=True)
    _log(
        f"{component}: generated {wdir / 'go.mod'}; running go mod tidy "
        "(downloads modules, may take minutes)"
    )
    t0 = time.monotonic()
    _run(["go", "mod", "tidy"], cwd=wdir)
    _log(f"{component}: go mod tidy done in {time.monotonic() - t0:.0f}s")


def _gomod_matches(component: str) -> bool:
    wdir = GO_DIR / _wrapper(component)
    gomod = wdir / "go.mod"
    if not gomod.is_file() or not (wdir / "go.sum").is_file():
        return False
    module = _SPEC[component][0]
    text = gomod.read_text()
    pinned = re.search(
        rf"^\s*(require\s+)?{re.escape(module)}\s+{re.escape(VERSIONS[component])}(\s*//.*)?$",
        text,
        re.M,
    )
    tools = (re.search(rf"^tool\s+{re.escape(t)}\s*$", text, re.M) for t in _tools(wdir.name))
    return pinned is not None and all(tools)


# ---------------------------------------------------------------- build


def _ldflags(component: str, version: str) -> str:
    flags = ["-s", "-w"]
    if _SPEC[component][0] == "k8s.io/kubernetes":
        m = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", version)
        assert m
        date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for base in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {base}.gitVersion={version}",
                f"-X {base}.gitMajor={m.group(1)}",
                f"-X {base}.gitMinor={m.group(2)}",
                f"-X {base}.gitTreeState=clean",
                f"-X {base}.buildDate={date}",
            ]
    elif component == "coredns":
        flags.append(f"-X github.com/coredns/coredns/coremain.GitCommit={version}")
    return " ".join(flags)


def build(component: str, force: bool = False, regen: bool = False) -> Path:
    """Build one component if needed; return the binary path."""
    version = VERSIONS[component]
    out = binary_path(component, version)
    if out.is_file() and not force:
        _log(f"{component} {version}: cached at {out}")
        return out
    if shutil.which("go") is None:
        raise BuildError(
            f"{component} {version} is not built ({out} is missing) and the go command "
            "is not on PATH: install Go >= 1.26, then run `python lab/build.py`"
        )
    wdir = GO_DIR / _wrapper(component)
    if regen or not _gomod_matches(component):
        generate_gomod(component)
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"{component}-{version}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    parallel = os.environ.get("KDISCO_LAB_BUILD_P", str(max(1, min(os.cpu_count() or 2, 4))))
    cmd = [
        "go",
        "build",
        "-v",
        "-trimpath",
        f"-p={parallel}",
        f"-ldflags={_ldflags(component, version)}",
        "-o",
        str(tmp),
        _SPEC[component][1],
    ]
    _log(f"{component} {version}: building (log: {log_file}); a cold build takes minutes")
    _log("$ " + " ".join(cmd))
    t0 = time.monotonic()
    count = 0
    last = ""
    done = threading.Event()

    def heartbeat() -> None:
        while not done.wait(20):
            _log(f"{component}: {time.monotonic() - t0:5.0f}s, {count} packages, last: {last}")

    hb = threading.Thread(target=heartbeat, daemon=True)
    hb.start()
    with log_file.open("w") as fh:
        proc = subprocess.Popen(
            cmd,
            cwd=wdir,
            env=_go_env("readonly"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout
        tail: list[str] = []
        for line in proc.stdout:
            fh.write(line)
            fh.flush()
            line = line.rstrip()
            count += 1
            last = line
            tail = ([*tail, line])[-40:]
        rc = proc.wait()
    done.set()
    elapsed = time.monotonic() - t0
    if rc != 0:
        tmp.unlink(missing_ok=True)
        hint = (
            "\nhint: run `python lab/build.py --regen --component "
            f"{component}` to regenerate lab/go/{_wrapper(component)}/go.mod and go.sum"
            if "go.sum" in "\n".join(tail) or "go.mod" in "\n".join(tail)
            else ""
        )
        raise BuildError(
            f"{component} build failed (rc={rc}) after {elapsed:.0f}s:\n" + "\n".join(tail) + hint
        )
    os.replace(tmp, out)
    _log(f"{component} {version}: built in {elapsed:.0f}s -> {out}")
    times = cache_dir() / "build-times.json"
    try:
        data = json.loads(times.read_text())
    except (OSError, ValueError):
        data = {}
    data[f"{component}-{version}"] = {
        "seconds": round(elapsed),
        "packages": count,
        "at": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    times.write_text(json.dumps(data, indent=2) + "\n")
    return out


def build_all(
    components: Iterable[str] = COMPONENTS, force: bool = False, regen: bool = False
) -> dict[str, Path]:
    return {c: build(c, force=force, regen=regen) for c in components}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--component",
        action="append",
        choices=COMPONENTS,
        help="component to build (repeatable; default: all)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--regen", action="store_true", help="regenerate wrapper go.mod/go.sum")
    p.add_argument("--regen-only", action="store_true", help="regenerate go.mod/go.sum, no build")
    p.add_argument("--print-paths", action="store_true", help="print binary paths and exit")
    a = p.parse_args(argv)
    comps = a.component or list(COMPONENTS)
    if a.print_paths:
        for c in comps:
            path = binary_path(c)
            print(f"{c}\t{VERSIONS[c]}\t{path}\t{'present' if path.is_file() else 'missing'}")
        return 0
    if shutil.which("go") is None:
        print("error: the go command is not on PATH", file=sys.stderr)
        return 2
    try:
        if a.regen or a.regen_only:
            for wrapper in dict.fromkeys(_wrapper(c) for c in comps):  # each module once
                generate_gomod(wrapper)
        if a.regen_only:
            return 0
        for c in comps:
            build(c, force=a.force)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
