"""What each strategy concluded on its turn (imports only the redactor, a leaf).

Errors and answers both carry attempts, so this sits below both.
"""

from __future__ import annotations

import enum

import attrs

from ._redact import redact


class Outcome(enum.Enum):
    """How one strategy's turn in the chain ended (``Attempt.outcome``).

    Attributes:
        ANSWERED: It answered (recorded when the answer was an ExternalName that was
            followed, or with a note on how the strategy ran).
        NOT_FOUND: It says there is no such Service.
        NOT_APPLICABLE: It cannot tell here (not in a pod, no cluster DNS, no
            credentials, a question it cannot answer).
        NO_SUCH_PORT: The Service exists but not with the port asked for.
        NO_READY_ENDPOINTS: The Service exists but nothing behind it is ready.
        NO_EXTERNAL_ROUTE: ``reach="external"``: the Service exists, but nothing
            routes to it from outside the cluster.
        WARNING: Not a turn but a note on the answer: its addresses are
            cluster-internal and this process runs outside the cluster.
        DENIED: The Kubernetes API refused (401 or 403).
        TIMED_OUT: Its share of the deadline ran out (or the deadline passed before
            its turn).
        FAILED: It failed (a server error, a malformed response) after its retries.
    """

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
    """One strategy's turn: what it concluded and why.

    Found in ``Resolution.attempts`` and ``DiscoveryError.attempts``.

    Attributes:
        strategy: The strategy's name (``"dns"``, ``"env"``, ``"api"``...).
        outcome: How its turn ended.
        reason: Why, in words (redacted as it is set: reasons quote errors, and
            errors can quote credentials).
        tries: How many times it was asked (retries of transient failures
            included; 0 when the deadline passed before its turn). Default 1.
    """

    strategy: str
    outcome: Outcome
    #: Redacted as it is set: reasons quote errors, and errors can quote credentials.
    reason: str = attrs.field(converter=redact)
    tries: int = 1

    def describe(self) -> str:
        """``strategy: outcome (reason, N tries)``, as error messages list it.

        Returns:
            str: One line, for logs and messages.
        """
        retried = f", {self.tries} tries" if self.tries > 1 else ""
        return f"{self.strategy}: {self.outcome.value} ({self.reason}{retried})"
