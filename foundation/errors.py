"""One error root, so the command line can tell a user's mistake from a failure."""


class ShelfstreamError(Exception):
    """A failure the command line reports as one line (exit status 1)."""

    exit_code = 1


class UsageError(ShelfstreamError):
    """Bad usage or bad input (exit status 2)."""

    exit_code = 2


class AwsNotConfiguredError(UsageError):
    """No endpoint and no credentials: nothing to talk to."""


class AwsError(ShelfstreamError):
    """An AWS call failed after its retries; carries the service's error code."""

    def __init__(self, service: str, operation: str, code: str, message: str) -> None:
        super().__init__(f"{service} {operation} failed: {code}: {message}")
        self.service = service
        self.operation = operation
        self.code = code
