"""The real KCL on one machine: the Java MultiLangDaemon against local services.

- Kinesis: kinesis-local (kinesis-mock, the engine LocalStack serves Kinesis with), installed by npm
  into ``.cache/kinesis-local`` (``make kinesis-local``) and bound to 127.0.0.1. It closes shards
  and reports child shards faithfully on resharding, which the KCL relies on.
- DynamoDB (the KCL's lease, worker-metrics and coordinator tables) and S3, SQS, SNS, Firehose:
  the embedded AWS (moto). docs/decisions.md (record 22) says why moto's DynamoDB and not DynamoDB Local.
- The daemon's jars: ``.cache/kcl-jars`` (``make kcl-jars``: deploy/kcl/fetch_jars.sh, checked
  against deploy/kcl/jars.sha256), started through deploy/kcl/launch.py like in the container.

Used by the tests, the KCL benchmark and ``shelfstream kcl-worker``. Everything started here binds
127.0.0.1 and is stopped by whoever started it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import IO

from config import Settings
from config.settings import env_name, to_env
from foundation.errors import ShelfstreamError

ROOT = Path(__file__).resolve().parents[1]
KCL_DIR = ROOT / "deploy" / "kcl"
KINESIS_LOCAL_PACKAGE = ROOT / ".cache" / "kinesis-local" / "node_modules" / "kinesis-local"
JAR_DIR = ROOT / ".cache" / "kcl-jars"

# For local runs and tests: shard discovery every second instead of every minute (the KCL sleeps one
# interval after its first shard sync, before it processes anything), metrics off, quick failover.
# Lease assignment every 10 s (the KCL's default for that failover time, not the deployed 2 s): the
# leader's first assignment then comes after workers started together have all joined, so they
# share the shards. With 2 s the first worker takes them all, and on one machine (no CPU figures
# per worker) variance balancing never moves them (docs/decisions.md, record 26).
LOCAL_PROPERTIES: Mapping[str, str] = {
    "metricsLevel": "NONE",
    "shardSyncIntervalMillis": "1000",
    "failoverTimeMillis": "5000",
    "leaseAssignmentIntervalMillis": "10000",
    "idleTimeBetweenReadsInMillis": "200",
    "shutdownGraceMillis": "40000",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ShelfstreamError(f"{what} did not start; see {log}") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@contextlib.contextmanager
def kinesis_local(workdir: Path) -> Iterator[str]:
    """Start kinesis-local on 127.0.0.1 (plain HTTP, a free port); yield its endpoint.

    Its server binds 0.0.0.0 with no option to change that, so this runs a copy of its script with the
    bind address set to 127.0.0.1.
    """
    script = KINESIS_LOCAL_PACKAGE / "main.js"
    if not script.exists():
        raise ShelfstreamError(
            f"kinesis-local is not installed at {KINESIS_LOCAL_PACKAGE}: run `make kinesis-local`"
        )
    source = script.read_text()
    bind_all = 'em("0.0.0.0")'
    if bind_all not in source:
        raise ShelfstreamError("kinesis-local's bind address moved; update shelfstream/kcl_local.py")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.js").write_text(source.replace(bind_all, 'em("127.0.0.1")'))
    shutil.copy(KINESIS_LOCAL_PACKAGE / "server.json", workdir / "server.json")
    plain, tls = free_port(), free_port()
    env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(plain),
        "KINESIS_MOCK_TLS_PORT": str(tls),
        "SPLIT_SHARD_DURATION": "200ms",
        "MERGE_SHARDS_DURATION": "200ms",
        "CREATE_STREAM_DURATION": "200ms",
        "UPDATE_SHARD_COUNT_DURATION": "200ms",
        "LOG_LEVEL": "WARN",
    }
    log_path = workdir / "kinesis-local.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["node", "main.js"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_port(plain, proc, "kinesis-local", log_path)
            yield f"http://127.0.0.1:{plain}"
        finally:
            _stop(proc)


def _children(pid: int) -> list[int]:
    """Child processes of ``pid``, whichever of its threads started them.

    ``/proc/<pid>/task/<tid>/children`` lists the children of one thread only: the Java daemon starts
    its record processors from worker threads, never from its main thread, so every thread is read.
    """
    children: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    for task in sorted(tasks, key=lambda t: int(t.name)):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue  # the thread ended meanwhile
    return children


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def check_jars(jar_dir: Path) -> None:
    if not (jar_dir / "amazon-kinesis-client-multilang-3.1.3.jar").exists():
        raise ShelfstreamError(f"no KCL jars in {jar_dir}: run `make kcl-jars` (Maven, Java 17)")


class KclWorker:
    """One MultiLangDaemon (one ECS task's worth): its Java process and the record processors it runs.

    Started like the container starts it: deploy/kcl/launch.py (``pid``, the task's main process)
    supervising the Java daemon (``java_pid``), which runs one ``shelfstream kcl-processor`` per leased
    shard. All of them share one process group, in a session of their own.
    """

    def __init__(
        self,
        name: str,
        settings: Settings,
        application: str,
        workdir: Path,
        env: Mapping[str, str],
        kinesis_endpoint: str | None,
        dynamodb_endpoint: str | None,
        properties: Mapping[str, str] | None = None,
        jar_dir: Path = JAR_DIR,
        to_terminal: bool = False,
        local: bool = True,
    ) -> None:
        self.name = name
        self.settings = settings
        self.application = application
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self._env = dict(env)
        endpoints = {"kinesisEndpoint": kinesis_endpoint, "dynamoDBEndpoint": dynamodb_endpoint}
        self._properties = {
            **(LOCAL_PROPERTIES if local else {}),
            **(properties or {}),
            **{key: value for key, value in endpoints.items() if value},
        }
        self._jar_dir = jar_dir
        self._to_terminal = to_terminal
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ShelfstreamError(f"KCL worker {self.name} is not running")
        return self.proc.pid

    def child_env(self) -> dict[str, str]:
        """The daemon's environment, which its record processors inherit: this worker's settings, and
        this source tree first on the import path, so `shelfstream kcl-processor` runs the code that
        started the worker (a second checkout next to the installed one would otherwise run the
        installed one's)."""
        bin_dir = str(Path(sys.executable).parent)
        python_path = os.environ.get("PYTHONPATH")
        return {
            **os.environ,
            **self._env,
            **to_env(self.settings),
            "KCL_APPLICATION_NAME": self.application,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(ROOT) + (os.pathsep + python_path if python_path else ""),
            env_name("ops", "health_file"): str(self.workdir / f"{self.name}.health"),
        }

    def start(self) -> KclWorker:
        check_jars(self._jar_dir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        template = (KCL_DIR / "shelfstream.properties").read_text(encoding="utf-8")
        extra = "".join(f"{key} = {value}\n" for key, value in self._properties.items())
        source = self.workdir / f"{self.name}.properties"
        source.write_text(template + "\n# local run\n" + extra, encoding="utf-8")
        env = self.child_env()
        command = [
            sys.executable,
            str(KCL_DIR / "launch.py"),
            "--properties",
            str(source),
            "--output",
            str(self.workdir / f"{self.name}.rendered.properties"),
            "--logback",
            str(KCL_DIR / "logback.xml"),
            "--jar-dir",
            str(self._jar_dir),
        ]
        if self._to_terminal:  # the daemon's log on our stderr; Ctrl-C reaches us, and we pass it on
            self.proc = subprocess.Popen(command, env=env, stdout=sys.stderr, start_new_session=True)
        else:
            self._log = self.log_path.open("ab")
            self.proc = subprocess.Popen(
                command, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def java_pid(self) -> int:
        children = _children(self.pid)
        if not children:
            raise ShelfstreamError(f"KCL worker {self.name} runs no Java process")
        return children[0]

    def rss_bytes(self) -> int:
        """Resident memory of the Java daemon (not its record processors, not the launcher)."""
        return rss_bytes(self.java_pid)

    def processors(self) -> list[int]:
        """PIDs of the record processors the daemon runs (one per leased shard)."""
        return _children(self.java_pid)

    def terminate(self) -> None:
        """SIGTERM to the launcher: what ECS sends to a task's main process when it stops the task."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the whole task at once (launcher, daemon, record processors): a task that dies."""
        if self.alive():
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        if self.proc is None:
            raise ShelfstreamError(f"KCL worker {self.name} was never started")
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        """Stop the daemon and anything left of its process group; its exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # orphaned record processors of a killed daemon
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    def ready(self) -> bool:
        """The daemon has initialized and runs its worker loop (it can take and hold leases)."""
        return "Initialization complete. Starting worker loop." in self.log_text()

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def is_leader(self) -> bool:
        """Whether the worker's lease assignment last ran as the leader's (KCL 3 logs it each run)."""
        last = ""
        for line in self.log_text().splitlines():
            if "is a leader, performing assignment" in line or "is not a leader, ignore" in line:
                last = line
        return "is a leader, performing assignment" in last

    def worker_id(self) -> str:
        """The KCL worker id the daemon picked (it names the lease owner); empty before it says."""
        for line in self.log_text().splitlines():
            if "Using workerId: " in line:
                return line.split("Using workerId: ", 1)[1].strip()
        return ""


def _local_aws(
    stack: contextlib.ExitStack,
    settings: Settings,
    application: str,
    workdir: Path,
    announce: Callable[[str], None],
) -> dict[str, str]:
    """The embedded AWS and kinesis-local, started on `stack`, with the stack provisioned in them; the
    endpoints and test credentials (also set in this process), announced for other shells."""
    from foundation.aws.embedded import EmbeddedAws, env_lines
    from foundation.aws.provision import provision

    aws = stack.enter_context(EmbeddedAws())
    kinesis = stack.enter_context(kinesis_local(workdir / "kinesis-local"))
    env = {
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_ENDPOINT_URL_KINESIS": kinesis,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        "AWS_REGION": settings.aws.region,
        "AWS_DEFAULT_REGION": settings.aws.region,
    }
    os.environ.update(env)
    provision(settings)
    lines = [*env_lines(aws.endpoint, settings), f"export AWS_ENDPOINT_URL_KINESIS={kinesis}"]
    announce(
        "\n".join(
            [
                f"KCL worker for stream {settings.aws.stream_name}, application {application};",
                "Kinesis: kinesis-local, DynamoDB and the rest: the embedded AWS. In another shell:",
                *(f"  {line}" for line in lines),
                "  shelfstream simulate --stores 6      # events in",
                f"  shelfstream kcl-worker --application {application}   # a second worker",
            ]
        )
    )
    return env


def run_worker(
    settings: Settings,
    local: bool,
    application: str,
    workdir: Path,
    announce: Callable[[str], None],
    jar_dir: Path = JAR_DIR,
) -> int:
    """One KCL worker until SIGINT/SIGTERM (passed on to the daemon, which hands its leases over).

    ``local``: start the embedded AWS and kinesis-local here, provision the stack in them, and announce
    how to point other shells (a producer, a second worker) at them. Otherwise the endpoints are the
    AWS SDK's own settings (``AWS_ENDPOINT_URL_KINESIS``, ``AWS_ENDPOINT_URL_DYNAMODB``, else
    ``AWS_ENDPOINT_URL``; none means AWS itself).
    """
    check_jars(jar_dir)
    with contextlib.ExitStack() as stack:
        env = _local_aws(stack, settings, application, workdir, announce) if local else {}
        kinesis_endpoint = os.environ.get("AWS_ENDPOINT_URL_KINESIS") or os.environ.get("AWS_ENDPOINT_URL")
        dynamodb_endpoint = os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or os.environ.get("AWS_ENDPOINT_URL")
        worker = KclWorker(
            "worker",
            settings,
            application,
            workdir,
            env,
            kinesis_endpoint,
            dynamodb_endpoint,
            None,
            jar_dir,
            to_terminal=True,
            local=bool(kinesis_endpoint or dynamodb_endpoint),  # against AWS itself: the deployed settings
        )
        stopping = False

        def on_signal(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True
            worker.terminate()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            worker.start()
            assert worker.proc is not None
            status = worker.proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            worker.stop(timeout=60)
        return status
