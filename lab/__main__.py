"""``python -m lab up|down|status|dns-stop|dns-start|build|env``."""

from __future__ import annotations

import argparse
import json
import sys
import time

from lab import _runner
from lab.build import main as _build_cli


def _up(args: argparse.Namespace) -> int:
    sd = _runner.state_dir()
    running = _runner.find_running_lab()
    if running is not None and running.workdir == sd:
        print(f"lab already up: {running.apiserver_url}, DNS {running.dns_server}", file=sys.stderr)
        print(sd / "lab.env")
        return 0
    if (sd / "state.json").is_file():  # stale or half-dead lab: clean it first
        print("stopping a stale lab first", file=sys.stderr)
        _runner.Lab.from_state(sd).stop()
    t0 = time.monotonic()
    lab = _runner.Lab(
        sd, detached=True, dual_stack=not args.single_stack, dns_ttl=args.dns_ttl, verbose=True
    )
    info = lab.start(timeout=args.timeout)
    env_file = sd / "lab.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in info.env().items()))
    print(
        f"lab up in {time.monotonic() - t0:.1f}s: apiserver {info.apiserver_url}, "
        f"DNS {info.dns_server}, timings {json.dumps(lab.timings)}",
        file=sys.stderr,
    )
    print(env_file)
    return 0


def _down(args: argparse.Namespace) -> int:
    sd = _runner.state_dir()
    if not (sd / "state.json").is_file():
        print("no lab recorded in " + str(sd), file=sys.stderr)
        return 0
    lab = _runner.Lab.from_state(sd)
    lab.stop()
    print(
        f"lab stopped ({', '.join(f'{n}={p.pid}' for n, p in lab.procs.items())})", file=sys.stderr
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    sd = _runner.state_dir()
    if not (sd / "state.json").is_file():
        print("down: no lab recorded in " + str(sd))
        return 1
    lab = _runner.Lab.from_state(sd)
    info = lab.info
    assert info is not None
    alive = lab.alive()
    api = info.apiserver_ready()
    dns = info.dns_ready()
    kcm = info.controller_manager_ready()
    print(f"processes: {alive}")
    print(f"apiserver {info.apiserver_url} ready={api}")
    print(f"controller-manager {info.controller_manager_url} healthy={kcm}")
    print(f"dns {info.dns_server} ready={dns}")
    print(f"env file: {sd / 'lab.env'}")
    return 0 if (api and kcm and dns and all(alive.values())) else 1


def _dns(args: argparse.Namespace) -> int:
    lab = _runner.Lab.from_state(_runner.state_dir())
    if args.cmd == "dns-stop":
        lab.stop_dns()
    else:
        lab.start_dns()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lab")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a detached lab (builds first if needed)")
    up.add_argument("--single-stack", action="store_true", help="IPv4-only service range")
    up.add_argument("--dns-ttl", type=int, default=None, help="CoreDNS kubernetes ttl")
    up.add_argument("--timeout", type=float, default=120.0)
    sub.add_parser("down", help="stop the lab started by up")
    sub.add_parser("status", help="exit 0 only if up and answering")
    sub.add_parser("dns-stop", help="stop CoreDNS of the running lab")
    sub.add_parser("dns-start", help="start CoreDNS of the running lab again")
    sub.add_parser("build", help="build missing binaries (same as python lab/build.py)")
    a, rest = p.parse_known_args(argv)
    try:
        if a.cmd == "up":
            return _up(a)
        if a.cmd == "down":
            return _down(a)
        if a.cmd == "status":
            return _status(a)
        if a.cmd in ("dns-stop", "dns-start"):
            return _dns(a)
        if a.cmd == "build":
            return _build_cli(rest)
    except _runner.LabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
