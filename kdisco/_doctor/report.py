"""What ``kdisco doctor`` found: one ``Check`` per question asked, and the ``Report``
that renders them as text (for people) or JSON (for scripts)."""

from __future__ import annotations

import enum
import textwrap
from typing import Any

import attrs

WIDTH = 100


class Status(enum.Enum):
    """How one check ended."""

    PASSED = "passed"
    FAILED = "failed"
    UNKNOWN = "could not check"


# What a person scans for in the text output; JSON carries Status.value instead.
_MARKS = {
    Status.PASSED: "✔ passed",
    Status.FAILED: "✘ FAILED",
    Status.UNKNOWN: "? could not check",
}


@attrs.frozen(kw_only=True)
class Check:
    """One question the doctor asked, and its answer.

    Attributes:
        name: Which check ("name", "namespace", "resolv.conf", "dns server", ...).
        status: How it ended.
        summary: One line: what was found.
        details: Further lines of evidence.
        hint: One line: the fix for a failure, or how to make an UNKNOWN checkable.
        blocking: False for a failure that does not stop a connection (a warning).
    """

    name: str
    status: Status
    summary: str
    details: tuple[str, ...] = ()
    hint: str | None = None
    blocking: bool = True

    @property
    def mark(self) -> str:
        """The status as shown in text: ``✔ passed``, ``✘ FAILED``, ``! warning``..."""
        if self.status is Status.FAILED and not self.blocking:
            return "! warning"
        return _MARKS[self.status]

    def to_json(self) -> dict[str, Any]:
        """The check as plain JSON types."""
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "details": list(self.details),
            "hint": self.hint,
            "blocking": self.blocking,
        }


def _wrap(text: str, indent: str) -> list[str]:
    # Long words (URLs, FQDNs) stay whole: a broken name is worse than a long line.
    return textwrap.wrap(
        text,
        width=WIDTH,
        initial_indent=indent,
        subsequent_indent=indent + "  ",
        break_long_words=False,
        break_on_hyphens=False,
    ) or [indent.rstrip()]


@attrs.frozen(kw_only=True)
class Report:
    """Every check the doctor ran for one target, in order.

    Attributes:
        target: What was diagnosed, as asked (``svc.ns:port``).
        checks: The checks, in the order they ran.
    """

    target: str
    checks: tuple[Check, ...]

    @property
    def would_connect(self) -> bool:
        """Whether nothing found stops a connection: no blocking check FAILED."""
        return not any(c.status is Status.FAILED and c.blocking for c in self.checks)

    @property
    def verdict(self) -> str:
        """One line: would a connection be made, and what stops it."""
        failed = [c.name for c in self.checks if c.status is Status.FAILED and c.blocking]
        if failed:
            return f"would not connect: {', '.join(failed)} failed"
        unknown = [c.name for c in self.checks if c.status is Status.UNKNOWN]
        if unknown:
            return f"would connect as far as checked (could not check: {', '.join(unknown)})"
        return "would connect"

    def text(self) -> str:
        """The report for people: the target, one block per check, the verdict."""
        lines = _wrap(f"kdisco doctor: {self.target}", "")
        for check in self.checks:
            lines.append("")
            lines += _wrap(f"{check.mark}  {check.name}: {check.summary}", "")
            for detail in check.details:
                lines += _wrap(detail, "    ")
            if check.hint:
                lines += _wrap(f"→ {check.hint}", "    ")
        lines.append("")
        lines += _wrap(f"verdict: {self.verdict}", "")
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The report as plain JSON types (``json.dumps`` takes it as is)."""
        return {
            "target": self.target,
            "would_connect": self.would_connect,
            "verdict": self.verdict,
            "checks": [c.to_json() for c in self.checks],
        }
