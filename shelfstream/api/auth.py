"""Bearer tokens: who may read and post for which store.

Only SHA-256 digests of the tokens are held in memory, and a presented token is compared with every
entry (``hmac.compare_digest``, no early exit), so neither the answer time nor a memory dump tells an
attacker which token is close to a real one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from foundation.errors import UsageError

MIN_TOKEN_CHARS: Final = 16
_STORE_ID: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # fullmatch: `$` allows a final newline
_TOKEN_CHARS: Final = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header carries as is


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a token: HQ (every store) or one store."""

    role: Literal["hq", "store"]
    store_id: str | None
    key: str  # a short digest of the token: the rate limiter's key, safe to log

    def can_see(self, store_id: str | None) -> bool:
        return self.role == "hq" or (store_id is not None and store_id == self.store_id)

    @property
    def label(self) -> str:
        return "hq" if self.role == "hq" else f"store:{self.store_id}"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenStore:
    def __init__(self, grants: Mapping[str, Mapping[str, Any]]) -> None:
        """`grants` maps each token to ``{"role": "hq"}`` or ``{"role": "store", "store_id": ...}``."""
        self._entries: list[tuple[bytes, Principal]] = []
        for number, (token, grant) in enumerate(grants.items(), start=1):
            principal = _principal(token, grant, number)
            self._entries.append((_digest(token), principal))

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str | None) -> Principal | None:
        """The token's principal, or None; the same work whatever the token."""
        digest = _digest(token or "")
        found: Principal | None = None
        for entry, principal in self._entries:
            if hmac.compare_digest(entry, digest):
                found = principal
        return found if token else None

    @classmethod
    def from_file(cls, path: str | Path) -> TokenStore:
        """Read a tokens file; any problem is one clear :class:`UsageError` (exit status 2)."""
        file = Path(path)
        try:
            raw = file.read_bytes()
        except FileNotFoundError:
            raise UsageError(f"tokens file {path} does not exist") from None
        except IsADirectoryError:
            raise UsageError(f"tokens file {path} is a directory") from None
        except OSError as exc:
            raise UsageError(f"tokens file {path} cannot be read: {exc.strerror or exc}") from None
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"tokens file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not data:
            raise UsageError(
                f"tokens file {path} must be a JSON object mapping tokens to "
                '{"role": "hq"} or {"role": "store", "store_id": "..."}'
            )
        try:
            return cls(data)
        except ValueError as exc:
            raise UsageError(f"tokens file {path}: {exc}") from None

    @classmethod
    def with_new_hq_token(cls) -> tuple[TokenStore, str]:
        """A store holding one freshly generated HQ token (for `serve` without --tokens, and the demo)."""
        token = new_token()
        return cls({token: {"role": "hq"}}), token


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _principal(token: object, grant: object, number: int) -> Principal:
    where = f"entry {number}"
    if not isinstance(token, str) or len(token) < MIN_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
        raise ValueError(f"{where}: a token must be at least {MIN_TOKEN_CHARS} visible ASCII characters")
    if not isinstance(grant, Mapping):
        raise ValueError(f"{where}: the grant must be an object with a role")
    role = grant.get("role")
    key = hashlib.sha256(token.encode()).hexdigest()[:12]
    if role == "hq":
        if grant.get("store_id") is not None:
            raise ValueError(f"{where}: an hq token has no store_id")
        return Principal("hq", None, key)
    if role == "store":
        store_id = grant.get("store_id")
        if not isinstance(store_id, str) or not _STORE_ID.fullmatch(store_id):
            raise ValueError(f"{where}: a store token needs a store_id of 1-64 characters [A-Za-z0-9._-]")
        return Principal("store", store_id, key)
    raise ValueError(f"{where}: role must be 'hq' or 'store', not {role!r}")


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (scheme case-insensitive)."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token
