"""docs/performance.md: the machine, the versions, the command and every figure."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from ._common import Section

REPO = Path(__file__).resolve().parents[1]


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "CPUs (nproc)": str(len(os.sched_getaffinity(0))),
        "CPU model": cpu,
        "memory": mem,
        "OS": f"{platform.system()} {platform.release()}",
    }


def versions() -> dict[str, str]:
    import kdisco
    from lab.versions import VERSIONS

    out = {
        "Python": platform.python_version(),
        "kdisco": kdisco.__version__,
        "kubernetes (client)": metadata.version("kubernetes"),
        "dnspython": metadata.version("dnspython"),
    }
    out.update({f"lab {k}": v for k, v in VERSIONS.items()})
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "kdisco"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        out["git commit"] = commit + (" (kdisco/ has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def render(sections: list[Section], command: str, seconds: float) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# Performance",
        "",
        "Written by `python -m bench` (the `bench/` package; `nox -s bench` runs it) from one "
        "run against the lab (real kube-apiserver, etcd, kube-controller-manager and CoreDNS "
        "on 127.0.0.1). Every "
        "figure is a side-by-side comparison measured in that run. Numbers from one machine "
        "say more as ratios than as absolutes. kdisco's figures are for the cluster view "
        "(`KDISCO_REACH=cluster`, what a pod gets). Do not edit by hand: run the benchmarks "
        "again.",
        "",
        "To reproduce, from the repository root:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Run on {now}, {seconds / 60:.1f} minutes.",
        "",
        "## Machine and versions",
        "",
    ]
    out += _table(["", ""], [[k, v] for k, v in {**machine(), **versions()}.items()])
    out += ["", "## Targets", ""]
    rows = []
    for s in sections:
        for t in s.targets:
            rows.append(
                [f"{s.number}", t.what, t.goal, t.measured, "met" if t.met else "**not met**"]
            )
    out += _table(["#", "figure", "target", "measured", ""], rows)
    for s in sections:
        out += ["", f"## {s.number}. {s.title}", ""]
        out += _table(s.headers, s.rows)
        for caption, headers, rows2 in s.extra_tables:
            out += ["", caption, ""]
            out += _table(headers, rows2)
        out.append("")
        out += [f"- {n}" for n in s.notes]
        out.append(
            f"- This section alone: `PYTHONPATH=. python -m bench {s.number}` "
            f"(`nox -s bench -- {s.number}`; add `--quick` for a smoke run)."
        )
    return "\n".join(out) + "\n"
