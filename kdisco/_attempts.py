"""What each strategy concluded on its turn (imports only the redactor, a leaf).

Errors and answers both carry attempts, so this sits below both.
"""

from __future__ import annotations

import enum

import attrs

from ._redact import redact


class Outcome(enum.Enum):
    """How one strategy's turn in the chain ended."""

    ANSWERED = "answered"
    NOT_FOUND = "not found"
    NOT_APPLICABLE = "not applicable"
    NO_SUCH_PORT = "no such port"
    NO_READY_ENDPOINTS = "no ready endpoints"
    #: ``reach="external"``: the Service exists, but nothing routes to it from outside
    #: the cluster (no load balancer address, external IP, node port or Ingress).
    NO_EXTERNAL_ROUTE = "no route from outside the cluster"
    #: Not a turn: a note on the answer (its addresses are cluster-internal, and the
    #: caller is outside the cluster).
    WARNING = "warning"
    DENIED = "access denied"
    TIMED_OUT = "timed out"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class Attempt:
    """One strategy's turn: what it concluded and why."""

    strategy: str
    outcome: Outcome
    #: Redacted as it is set: reasons quote errors, and errors can quote credentials.
    reason: str = attrs.field(converter=redact)
    tries: int = 1

    def describe(self) -> str:
        retried = f", {self.tries} tries" if self.tries > 1 else ""
        return f"{self.strategy}: {self.outcome.value} ({self.reason}{retried})"
