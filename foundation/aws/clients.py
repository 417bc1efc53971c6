"""AWS wiring: clients built the AWS SDK's usual way, so endpoints, region and credentials come
from ``AWS_ENDPOINT_URL*``, ``AWS_REGION``/``AWS_DEFAULT_REGION`` and profiles, never from us."""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from config import Settings
from foundation.errors import AwsNotConfiguredError

if TYPE_CHECKING:
    import boto3
    from aiobotocore.session import AioSession
    from botocore.config import Config

# boto3, botocore and aiobotocore are imported where a client is made (about a second of start-up):
# commands that never talk to AWS, such as backtest, do not pay for them.


# Generous connection pool (many shards and batches in flight), adaptive client-side retries.
@functools.cache
def _config() -> Config:
    from botocore.config import Config

    return Config(
        retries={"max_attempts": 6, "mode": "standard"},
        max_pool_connections=64,
        connect_timeout=5,
        read_timeout=30,
    )


def region(settings: Settings) -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or settings.aws.region


def endpoint_configured() -> bool:
    return any(key == "AWS_ENDPOINT_URL" or key.startswith("AWS_ENDPOINT_URL_") for key in os.environ)


def require_aws() -> None:
    """Fail with one clear line when there is neither an endpoint nor credentials to talk to."""
    if endpoint_configured():
        return
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        raise AwsNotConfiguredError(
            "no AWS endpoint and no AWS credentials are configured: run `shelfstream local-aws` and set "
            "AWS_ENDPOINT_URL to the address it prints, or configure AWS credentials (AWS_PROFILE, ...)"
        )


def point_at(endpoint: str) -> None:
    """Aim this process's AWS SDK at an endpoint (the embedded AWS), with dummy credentials if none."""
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@functools.cache
def _boto3_session(aws_env: tuple[tuple[str, str], ...]) -> boto3.session.Session:
    # One session per AWS environment: building one costs ~0.1 s (it loads the service models).
    import boto3

    return boto3.session.Session()


def sync_client(service: str, settings: Settings) -> Any:
    """A boto3 client for one-shot commands (provision, inventory, query)."""
    session = _boto3_session(tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_"))))
    return session.client(service, region_name=region(settings), config=_config())


def aio_session() -> AioSession:
    from aiobotocore.session import get_session

    return get_session()


@asynccontextmanager
async def aio_client(
    service: str, settings: Settings, session: AioSession | None = None
) -> AsyncIterator[Any]:
    """An aiobotocore client for the long-running async paths (producers, processor, dispatcher)."""
    sess = session or aio_session()
    async with sess.create_client(service, region_name=region(settings), config=_config()) as client:
        yield client


class AioClients:
    """The set of async clients one process needs, opened together and closed together."""

    def __init__(self, settings: Settings, *services: str) -> None:
        self._settings = settings
        self._services = services
        self._stack = AsyncExitStack()
        self._clients: dict[str, Any] = {}

    async def __aenter__(self) -> AioClients:
        session = aio_session()
        for service in self._services:
            self._clients[service] = await self._stack.enter_async_context(
                aio_client(service, self._settings, session)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def __getitem__(self, service: str) -> Any:
        return self._clients[service]
