"""The local KCL helpers that need no Java: settings for the record processors, the command's errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import Settings
from shelfstream import cli
from shelfstream.kcl_local import LOCAL_PROPERTIES, ROOT, KclWorker


def test_a_record_processor_gets_the_workers_settings_and_its_own_health_file(tmp_path: Path) -> None:
    settings = Settings(
        aws={"stream_name": "t-events", "bucket": "b"}, trucks={"travel_pairs_s": {"a|b": 2.0}}
    )
    env = KclWorker("w", settings, "app", tmp_path, {}, None, None).child_env()
    assert env["SHELFSTREAM_AWS__STREAM_NAME"] == "t-events"
    assert env["SHELFSTREAM_TRUCKS__TRAVEL_PAIRS_S"] == '{"a|b": 2.0}'
    assert env["SHELFSTREAM_OPS__HEALTH_FILE"] == str(tmp_path / "w.health")


def test_kcl_worker_without_jars_says_how_to_get_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["kcl-worker", "--local", "--jar-dir", str(tmp_path), "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"shelfstream: error: no KCL jars in {tmp_path}: run `make kcl-jars` (Maven, Java 17)"]


def test_the_record_processors_run_the_code_of_the_tree_that_started_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "elsewhere"))
    env = KclWorker("w", Settings(aws={"bucket": "b"}), "app", tmp_path, {"X": "1"}, None, None).child_env()
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), str(tmp_path / "elsewhere")]
    found = subprocess.run(
        [sys.executable, "-c", "import processors.kcl_processor as k; print(k.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == ROOT / "processors" / "kcl_processor.py"
    assert (env["X"], env["SHELFSTREAM_AWS__BUCKET"], env["KCL_APPLICATION_NAME"]) == ("1", "b", "app")


def test_a_worker_sets_only_the_endpoints_it_is_given(tmp_path: Path) -> None:
    local = KclWorker("w", Settings(), "app", tmp_path, {}, "http://127.0.0.1:1", "http://127.0.0.1:2")
    aws = KclWorker("w", Settings(), "app", tmp_path, {}, None, None, local=False)
    assert local._properties["kinesisEndpoint"] == "http://127.0.0.1:1"
    assert local._properties["dynamoDBEndpoint"] == "http://127.0.0.1:2"
    assert local._properties["metricsLevel"] == LOCAL_PROPERTIES["metricsLevel"] == "NONE"
    assert "kinesisEndpoint" not in aws._properties
    assert "dynamoDBEndpoint" not in aws._properties
    assert "metricsLevel" not in aws._properties  # the deployed properties file decides


def test_children_started_by_any_thread_are_found() -> None:
    # The Java daemon starts its record processors from worker threads: /proc lists a child under
    # the thread that started it, so reading the main thread's list alone found none.
    import subprocess
    import sys
    import threading

    from shelfstream.kcl_local import _children, rss_bytes

    started: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(
        target=lambda: started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]))
    )
    thread.start()
    thread.join()
    (child,) = started
    try:
        assert child.pid in _children(os.getpid())
        assert rss_bytes(child.pid) > 0
    finally:
        child.kill()
        child.wait(timeout=10)


def test_the_benchmark_runs_the_deployed_lease_settings_not_the_local_ones(tmp_path: Path) -> None:
    # The deployed file assigns leases every 2 s; local runs keep the KCL's default interval for their
    # shorter failover time (workers started together share the shards); the benchmark passes the
    # deployed values on top of the local ones, so it measures what is deployed.
    from benchmarks.kcl import deployed_lease_settings

    lease = deployed_lease_settings()
    assert lease == {"failoverTimeMillis": "10000", "leaseAssignmentIntervalMillis": "2000"}
    assert LOCAL_PROPERTIES["leaseAssignmentIntervalMillis"] == str(
        2 * int(LOCAL_PROPERTIES["failoverTimeMillis"])
    )
    worker = KclWorker(
        "w", Settings(), "app", tmp_path, {}, "http://127.0.0.1:1", "http://127.0.0.1:2", lease
    )
    assert worker._properties["leaseAssignmentIntervalMillis"] == "2000"
    assert worker._properties["failoverTimeMillis"] == "10000"


def test_the_daemon_log_says_who_leads_and_the_worker_id(tmp_path: Path) -> None:
    worker = KclWorker("w", Settings(), "app", tmp_path, {}, "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert (worker.worker_id(), worker.is_leader()) == ("", False)  # no log yet
    worker.log_path.parent.mkdir(parents=True, exist_ok=True)
    worker.log_path.write_text(
        "x Using workerId: w-123\n"
        "y Worker w-123 is a leader, performing assignment\n"
        "z Worker w-123 is not a leader, ignore\n"
    )
    assert (worker.worker_id(), worker.is_leader()) == ("w-123", False)  # the last run decides
    with worker.log_path.open("a") as log:
        log.write("z Worker w-123 is a leader, performing assignment\n")
    assert worker.is_leader()
