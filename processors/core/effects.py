"""What the core asks the shell to do. Collected in lists and drained per batch, so the hot path
appends to a list instead of building an effect object for every archived record."""

from __future__ import annotations

from dataclasses import dataclass, field

from foundation.contract import Alert, RestockRequest


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A refused record with its reason; `ref` says where it came from (a sequence number or line)."""

    ref: str
    reason: str
    record: bytes


@dataclass(slots=True)
class Effects:
    requests: list[RestockRequest] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    archive: list[bytes] = field(default_factory=list)
    rejected: list[RejectedRecord] = field(default_factory=list)
    windows: list[bytes] = field(default_factory=list)
    # Archive-only notes (JSON), e.g. the end of a stock-out: history for reports, never sent to SNS.
    notes: list[bytes] = field(default_factory=list)
    # Records the shell could not apply at all (an unexpected error; `reason` holds it): dead letters.
    failed: list[RejectedRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.requests
            or self.alerts
            or self.archive
            or self.rejected
            or self.windows
            or self.notes
            or self.failed
        )

    def extend(self, other: Effects) -> None:
        self.requests.extend(other.requests)
        self.alerts.extend(other.alerts)
        self.archive.extend(other.archive)
        self.rejected.extend(other.rejected)
        self.windows.extend(other.windows)
        self.notes.extend(other.notes)
        self.failed.extend(other.failed)
