"""Tokens and rate limits: who is who, compared in constant time, and how fast each may ask."""

from __future__ import annotations

import hmac
from pathlib import Path

import orjson
import pytest

from foundation.errors import UsageError
from shelfstream.api import auth as auth_module
from shelfstream.api.auth import TokenStore, bearer_token
from shelfstream.api.ratelimit import RateLimiter
from shelfstream.cli import main
from tests.unit.api_helpers import FakeClock

TOKENS = {
    "hq-token-aaaaaaaaaaaaaaaa": {"role": "hq"},
    "store-token-bbbbbbbbbbbbbbbb": {"role": "store", "store_id": "store-001"},
}


def test_tokens_map_to_their_principals() -> None:
    store = TokenStore(TOKENS)
    hq = store.authenticate("hq-token-aaaaaaaaaaaaaaaa")
    shop = store.authenticate("store-token-bbbbbbbbbbbbbbbb")
    assert hq is not None
    assert hq.role == "hq"
    assert hq.can_see("anything")
    assert shop is not None
    assert shop.role == "store"
    assert shop.store_id == "store-001"
    assert shop.can_see("store-001")
    assert not shop.can_see("store-002")
    assert not shop.can_see(None)
    assert store.authenticate("hq-token-aaaaaaaaaaaaaaa") is None  # one character short
    assert store.authenticate("") is None
    assert store.authenticate(None) is None
    assert shop.key != hq.key
    assert "store-token" not in shop.key


def test_every_entry_is_compared_whatever_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the first token, the last token and an unknown one cost the same comparisons."""
    many = {f"token-{i:030d}": {"role": "hq"} for i in range(20)}
    store = TokenStore(many)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", counting)
    for token in ("token-" + "0" * 30, f"token-{19:030d}", "unknown-token-xxxxxxxxxxxx"):
        calls.clear()
        store.authenticate(token)
        assert len(calls) == 20


def test_only_digests_of_tokens_are_held() -> None:
    store = TokenStore(TOKENS)
    assert "hq-token-aaaaaaaaaaaaaaaa" not in repr(vars(store))


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Basic abc", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_header_parsing(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{nope", "is not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b"{}", "must be a JSON object"),
        (orjson.dumps({"short": {"role": "hq"}}), "at least 16 visible ASCII characters"),
        (orjson.dumps({"long-enough-token-123": {"role": "admin"}}), "role must be 'hq' or 'store'"),
        (orjson.dumps({"long-enough-token-123": {"role": "store"}}), "needs a store_id"),
        (orjson.dumps({"long-enough-token-123": {"role": "store", "store_id": "a b"}}), "needs a store_id"),
        (orjson.dumps({"long-enough-token-123": "hq"}), "must be an object with a role"),
        (
            orjson.dumps({"long-enough-token-123": {"role": "hq", "store_id": "s"}}),
            "an hq token has no store_id",
        ),
    ],
)
def test_a_bad_tokens_file_is_one_clear_usage_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(content)
    with pytest.raises(UsageError, match=message) as err:
        TokenStore.from_file(path)
    assert err.value.exit_code == 2
    assert "long-enough-token" not in str(err.value)  # a token never ends up in an error message


def test_a_missing_or_unreadable_tokens_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        TokenStore.from_file(tmp_path / "absent.json")
    with pytest.raises(UsageError, match="is a directory"):
        TokenStore.from_file(tmp_path)


def test_serve_with_a_bad_tokens_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.json"
    path.write_text("{broken")
    code = main(["serve", "--tokens", str(path), "--port", "0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("shelfstream: error: tokens file")
    assert "Traceback" not in err


def test_a_generated_hq_token_is_long_and_works() -> None:
    store, token = TokenStore.with_new_hq_token()
    assert len(token) >= 40
    principal = store.authenticate(token)
    assert principal is not None
    assert principal.role == "hq"


def test_the_rate_limiter_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=2.0, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0  # keys are independent
    clock.now += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    clock.now += 100
    assert [limiter.take("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # never more than the burst


def test_the_rate_limiter_memory_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate_per_s=0.001, burst=1, clock=clock, max_keys=100)
    for i in range(1000):
        limiter.take(f"k{i}")
    assert len(limiter._buckets) <= 100
    assert limiter.take("k999") > 0  # the newest keys are the ones kept
