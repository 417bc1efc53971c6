"""A second Kinesis implementation for the tests: kinesis-local (kinesis-mock, the engine inside
LocalStack), which closes shards and reports child shards faithfully on resharding.

`make test` installs it with npm into .cache/kinesis-local. Its server binds 0.0.0.0 with no option to
change that, so the tests run a copy of its script with the bind address set to 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / ".cache" / "kinesis-local" / "node_modules" / "kinesis-local"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def kinesis_local(workdir: Path) -> Iterator[str]:
    """Start kinesis-local on 127.0.0.1 (plain HTTP, a free port); yield its endpoint."""
    script = PACKAGE / "main.js"
    if not script.exists():
        raise RuntimeError(f"kinesis-local is not installed at {PACKAGE}: run `make test`, which installs it")
    source = script.read_text()
    bind_all = 'em("0.0.0.0")'
    if bind_all not in source:
        raise RuntimeError("kinesis-local's bind address moved; update tests/integration/kinesis_local.py")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "main.js").write_text(source.replace(bind_all, 'em("127.0.0.1")'))
    shutil.copy(PACKAGE / "server.json", workdir / "server.json")
    plain, tls = _free_port(), _free_port()
    env = {
        **os.environ,
        "KINESIS_MOCK_PLAIN_PORT": str(plain),
        "KINESIS_MOCK_TLS_PORT": str(tls),
        "SPLIT_SHARD_DURATION": "200ms",
        "MERGE_SHARDS_DURATION": "200ms",
        "CREATE_STREAM_DURATION": "200ms",
        "LOG_LEVEL": "WARN",
    }
    log = (workdir / "kinesis-local.log").open("wb")
    proc = subprocess.Popen(["node", "main.js"], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", plain), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"kinesis-local did not start; see {workdir / 'kinesis-local.log'}"
                    ) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{plain}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
