"""Which S3 errors mean the checkpoint's fence refused a write (the fence itself is tested over the
wire in tests/integration/test_checkpoints.py)."""

from __future__ import annotations

from botocore.exceptions import ClientError

from processors.checkpoints import _precondition_failed


def error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


def test_a_refused_conditional_write_is_told_from_other_failures() -> None:
    """S3 refuses a conditional PUT with 412 PreconditionFailed, or 409 ConditionalRequestConflict when
    another conditional write to the key raced it; anything else is a failure, not a new owner."""
    assert _precondition_failed(error("PreconditionFailed", 412))
    assert _precondition_failed(error("ConditionalRequestConflict", 409))
    assert _precondition_failed(error("", 412))  # an answer without an error body
    assert not _precondition_failed(error("AccessDenied", 403))
    assert not _precondition_failed(error("SlowDown", 503))
    assert not _precondition_failed(error("OperationAborted", 409))
