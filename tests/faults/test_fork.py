"""A forked child (gunicorn --preload, celery prefork, multiprocessing's fork) starts its
own watches instead of serving the parent's last list for ever (issue 10, item 15)."""

from __future__ import annotations

import os
import time

import pytest

import kdisco
from tests._helpers_api import FakeApiServer, FakeNamespace, eps_slice, svc
from tests.test_watchcache import hosts, make, wait_until

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def test_a_forked_child_sees_changes_made_after_the_fork(server: FakeApiServer) -> None:
    ns = FakeNamespace(server)
    ns.put("services", svc("db"))
    ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.1"]))
    with make(server) as d:
        assert hosts(d.discover("db")) == {"192.0.2.1"}
        wait_until(lambda: ns.watches("endpointslices") >= 1, "parent watching")
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report through the exit status, never return to pytest
            status = 1
            try:
                os.close(write_end)
                os.read(read_end, 1)  # the parent has changed the slice
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    res = d.discover("db")
                    if hosts(res) == {"192.0.2.9"} and not res.stale:
                        status = 0
                        break
                    time.sleep(0.05)
                d.close()
            finally:
                os._exit(status)
        os.close(read_end)
        ns.put("endpointslices", eps_slice("db-a", "db", ["192.0.2.9"]))
        os.write(write_end, b"x")
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The parent's own watch goes on as before.
        wait_until(lambda: _current(d) == {"192.0.2.9"}, "parent sees it too")


def _current(d: kdisco.Discoverer) -> set[str]:
    d.clear_cache()
    return hosts(d.discover("db"))
