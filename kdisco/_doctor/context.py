"""What every doctor check reads: the settings, the parsed name, and the facts earlier
checks found (``findings``) for later ones."""

from __future__ import annotations

from typing import Any

import attrs

from kdisco._k8s.netpol import Peer
from kdisco._names import Query
from kdisco._settings import DEFAULT_RESOLV_CONF, Settings

DEFAULT_STEP_TIMEOUT = 2.0


@attrs.define
class Context:
    """The doctor's state for one run; checks read it and add to ``findings``.

    Attributes:
        settings: The settings kdisco would use (``Settings.load``).
        query: The parsed name/namespace/port, or None when the name is invalid.
        raw_name: The name as the user typed it.
        namespace_source: Where the namespace came from, in words.
        probe: Whether the user asked for a TCP connect (``--probe``).
        step_timeout: Seconds for each network step.
        caller: Who connects, for the NetworkPolicy check: from ``--from-namespace``
            and ``--from-labels``, else None (the cluster checks may find this pod).
        findings: Facts shared between checks: ``dns_answer``, ``answer``, ``error``
            (local checks), ``service``, ``api_answer``, ``pods``, ``probe_targets``
            (cluster checks).
        name_error: Why the name is invalid, when ``query`` is None.
        resolv_conf: The resolv.conf path the settings were read with.
    """

    settings: Settings
    query: Query | None
    raw_name: str
    namespace_source: str
    probe: bool = False
    step_timeout: float = DEFAULT_STEP_TIMEOUT
    caller: Peer | None = None
    findings: dict[str, Any] = attrs.field(factory=dict)
    #: Why the name is invalid (``query`` is None), for the ``name`` check.
    name_error: str | None = None
    #: The resolv.conf the settings were read with.
    resolv_conf: str = DEFAULT_RESOLV_CONF
