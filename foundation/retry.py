"""Backoff with full jitter, shared by every adapter that retries AWS calls itself."""

from __future__ import annotations

import random

from botocore.exceptions import ClientError

RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "LimitExceededException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
        "InternalServerError",
        "InternalError",
        "RequestLimitExceeded",
        "KMSThrottlingException",
        "SlowDown",
    }
)


def backoff_s(attempt: int, base_s: float, cap_s: float = 5.0, rng: random.Random | None = None) -> float:
    """Full jitter (AWS Architecture Blog): uniform in [0, min(cap, base * 2**attempt)]."""
    ceiling = min(cap_s, base_s * (2**attempt))
    return (rng or random).uniform(0, ceiling)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "Unknown"))
    return type(exc).__name__


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in RETRYABLE_CODES or (isinstance(status, int) and status >= 500)
    return isinstance(exc, (ConnectionError, TimeoutError, OSError)) or type(exc).__name__ in {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "ServerDisconnectedError",
        "ClientConnectorError",
    }
