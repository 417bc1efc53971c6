"""The embedded local AWS: moto's server in this process, over real HTTP on 127.0.0.1.

Everything talks to it through the AWS SDK's ordinary endpoint settings, so the code under test is the
code that runs on real AWS. Its Kinesis enforces Kinesis's per-shard limits (shelfstream/kinesis_limits.py)
unless told not to. Two of moto's traps are handled here: its Kinesis backend is not
thread-safe (concurrent PutRecords lose records), so Kinesis requests are served one at a time; and
S3 virtual-host addressing breaks on ``localhost``, so the endpoint always names ``127.0.0.1``.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

from config import Settings
from foundation.errors import ShelfstreamError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
KINESIS_TARGET_PREFIX = "Kinesis_20131202."
DYNAMODB_TARGET_PREFIX = "DynamoDB_20120810."

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class SerializerStats:
    kinesis_requests: int
    """Kinesis requests served."""
    contended: int
    """Kinesis requests that had to wait for another one to finish: proof the lock mattered."""


class KinesisSerializer:
    """WSGI middleware serving Kinesis requests strictly one at a time, and DynamoDB's one at a time
    (apart from Kinesis'), other services concurrently.

    moto's Kinesis mutates shard state without locks; with 8 concurrent producers it lost ~1-2% of
    records. Its DynamoDB checks a condition and then writes, unlocked: eight dispatchers claiming one
    restock request at once were all told "claimed" now and then on a loaded machine, where real
    DynamoDB's conditional write lets exactly one win. The lock covers the whole request, including
    draining the response body, because a lazily produced body could otherwise still touch the
    backend after the lock is released.
    """

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._dynamodb_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._requests = 0
        self._contended = 0

    @property
    def stats(self) -> SerializerStats:
        with self._stats_lock:
            return SerializerStats(kinesis_requests=self._requests, contended=self._contended)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        if target.startswith(DYNAMODB_TARGET_PREFIX):
            with self._dynamodb_lock:
                return self._drained(environ, start_response)
        if not target.startswith(KINESIS_TARGET_PREFIX):
            return self._app(environ, start_response)
        if not self._lock.acquire(blocking=False):
            with self._stats_lock:
                self._contended += 1
            self._lock.acquire()
        try:
            with self._stats_lock:
                self._requests += 1
            return self._drained(environ, start_response)
        finally:
            self._lock.release()

    def _drained(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        """The app's whole answer, read before the caller's lock is released."""
        result = self._app(environ, start_response)
        try:
            return [b"".join(result)]
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()


def _request_handler() -> type[Any]:
    """moto's request handler without werkzeug's one-line-per-request log (errors still log)."""
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    class QuietHandler(MotoRequestHandler):
        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            return None

    return QuietHandler


class EmbeddedAws:
    """moto's server in a daemon thread of this process, on 127.0.0.1 and a free (or given) port.

    A threaded server, so an SQS long poll (WaitTimeSeconds) does not hold up anyone else.
    moto's state is per process: two instances in one process share the same resources.
    """

    def __init__(self, port: int | None = None, kinesis_limits: bool = True) -> None:
        self._requested_port = port or 0
        self._kinesis_limits = kinesis_limits
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._serializer: KinesisSerializer | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise ShelfstreamError("the embedded AWS is not running")
        return f"http://{HOST}:{self.port}"

    @property
    def port(self) -> int:
        if self._server is None:
            raise ShelfstreamError("the embedded AWS is not running")
        return int(self._server.server_address[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def serializer(self) -> KinesisSerializer:
        if self._serializer is None:
            raise ShelfstreamError("the embedded AWS is not running")
        return self._serializer

    def start(self) -> EmbeddedAws:
        if self._server is not None:
            return self
        began = time.perf_counter()
        # Imported here: moto costs ~0.5 s to import and most commands never start it.
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        from foundation.aws import kinesis_limits, moto_kinesis

        moto_kinesis.install()
        kinesis_limits.install()
        kinesis_limits.enable(self._kinesis_limits)

        # Bind ourselves: werkzeug's own bind prints to stderr and calls sys.exit on a busy port.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, self._requested_port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ShelfstreamError(
                f"cannot serve the embedded AWS on {HOST}:{self._requested_port}: {exc.strerror or exc}"
            ) from exc
        self._serializer = KinesisSerializer(DomainDispatcherApplication(create_backend_app))
        try:
            self._server = make_server(
                HOST,
                self._requested_port,
                self._serializer,
                threaded=True,
                request_handler=_request_handler(),
                fd=sock.fileno(),  # werkzeug duplicates the descriptor
            )
        finally:
            sock.close()
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="embedded-aws", kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        log.info(
            "embedded AWS started",
            extra={"endpoint": self.endpoint, "seconds": round(time.perf_counter() - began, 3)},
        )
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None
        log.info("embedded AWS stopped")

    def __enter__(self) -> EmbeddedAws:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def env_lines(endpoint: str, settings: Settings) -> list[str]:
    """The shell lines that aim another process's AWS SDK at the embedded AWS."""
    return [
        f"export AWS_ENDPOINT_URL={endpoint}",
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        f"export AWS_DEFAULT_REGION={settings.aws.region}",
    ]


def banner(endpoint: str, settings: Settings) -> str:
    """What `shelfstream local-aws` shows: where it listens and how to point other processes at it."""
    lines = [
        f"embedded AWS listening on {endpoint} (Ctrl-C to stop)",
        "in another shell:",
        *(f"  {line}" for line in env_lines(endpoint, settings)),
    ]
    return "\n".join(lines)


def serve(
    port: int | None,
    settings: Settings,
    announce: Callable[[str], None],
    stop: threading.Event | None = None,
) -> None:
    """Serve the embedded AWS until SIGINT/SIGTERM (or ``stop`` is set), then stop cleanly.

    Provisions nothing. ``announce`` receives the banner once the server accepts connections (the
    command line prints it; library code never writes to stdout). Signal handlers are installed only
    for the duration and only from the main thread; elsewhere pass ``stop``.
    """
    in_main = threading.current_thread() is threading.main_thread()
    if stop is None and not in_main:
        raise ShelfstreamError("serve() off the main thread cannot catch signals: pass a stop event")
    stop = stop or threading.Event()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("embedded AWS stopping", extra={"signal": signal.Signals(signum).name})
        stop.set()

    with EmbeddedAws(port, settings.aws.embedded_kinesis_limits) as aws:
        if in_main:
            for sig in (int(signal.SIGINT), int(signal.SIGTERM)):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            announce(banner(aws.endpoint, settings))
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
