"""Explicit lifecycle: SIGTERM or SIGINT asks the running work to drain, flush, checkpoint and exit 0
(ECS gives 30 s between SIGTERM and SIGKILL)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM/SIGINT; a second signal falls back to the default (immediate) handling."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def handle(sig: signal.Signals) -> None:
        stop.set()
        loop.remove_signal_handler(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handle, sig)
    return stop


async def heartbeat(path: str, stop: asyncio.Event, every_s: float = 5.0) -> None:
    """Touch a file while the process is healthy; the container HEALTHCHECK checks its age."""
    file = Path(path)
    while not stop.is_set():
        await asyncio.to_thread(file.touch)
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            continue
    await asyncio.to_thread(file.unlink, missing_ok=True)
