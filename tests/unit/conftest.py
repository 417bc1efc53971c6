"""Unit tests reach no AWS: whatever an integration fixture set earlier in the session is hidden."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def no_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL") or key in {
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
        }:
            monkeypatch.delenv(key)
