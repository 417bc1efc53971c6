"""The one place that wires a process: its settings, AWS clients and resources, for every entry point.

Each command builds one `Wiring` and passes what it holds down; nothing below the entry points reads
settings or opens clients on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config import Settings, load_settings
from foundation.aws.clients import AioClients, require_aws, sync_client
from foundation.aws.provision import Resources, resolve

PROCESSOR_SERVICES = ("kinesis", "sqs", "sns", "firehose", "s3")
DEMO_SERVICES = (*PROCESSOR_SERVICES, "dynamodb")


@dataclass(frozen=True)
class Wiring:
    settings: Settings
    _resources: dict[str, Resources] = field(default_factory=dict, repr=False, compare=False)

    def resources(self) -> Resources:
        """The app's streams, bucket, topic and queues (resolved once per process)."""
        if "r" not in self._resources:
            self._resources["r"] = resolve(self.settings)
        return self._resources["r"]

    def aio(self, *services: str) -> AioClients:
        """Async clients for `services`, opened and closed with ``async with``."""
        return AioClients(self.settings, *services)

    def client(self, service: str) -> Any:
        """A synchronous client (one-shot commands)."""
        return sync_client(service, self.settings)


def bootstrap(*, aws: bool = True, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Wiring:
    """Settings from the environment (plus `overrides`, by group: ``{"detector": {"kind": "off"}}``),
    after checking AWS is configured when `aws`."""
    if aws:
        require_aws()
    return Wiring(load_settings(**(overrides or {})))
