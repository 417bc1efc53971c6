"""History and batch paths against the embedded AWS: the archive answers SQL, a weekly report is written
and announced, files are ingested with their bad rows kept, and uploads to incoming/ are picked up."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from config import Settings
from config.settings import to_env
from foundation.aws.clients import AioClients, sync_client
from foundation.aws.provision import Resources, provision
from foundation.contract import alert_id, format_ts
from history.archive import ArchiveFilter, S3Archive, mirror_archive
from history.query import run_query
from producers.ingest import IngestReport, IngestTarget, UnsentRecords
from producers.ingest_watch import IngestWatcher
from producers.kinesis_writer import KinesisWriter
from shelfstream.cli import main
from tests.integration.test_processor_shell import process_until_caught_up, produce

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MONDAY = 1_785_715_200_000  # 2026-08-03T00:00:00Z, the start of ISO week 2026-W32
MINUTE, HOUR, DAY = 60_000, 3_600_000, 86_400_000
SERVICES = ("kinesis", "sqs", "sns", "firehose", "s3")
ReadStream = Callable[[Any, str], Awaitable[dict[str, list[dict[str, Any]]]]]


def event(kind: str, eid: str, store: str, at_ms: int, **fields: Any) -> bytes:
    body = {"type": kind, "event_id": eid, "store_id": store, "ts": format_ts(MONDAY + at_ms)}
    return orjson.dumps({**body, "product_id": "milk", **fields})


def workload() -> list[bytes]:
    """Berlin sells out and is restocked by a truck; Hamburg and Munich trade quietly.

    Berlin: stock 8, eight sales from 09:01 (the third leaves 5: a restock request; the eighth leaves
    0: out of stock), a refund on Tuesday 10:00 (back in stock), the truck on Tuesday 12:00.
    """
    records = [event("count", "Berlin-c", "Berlin", 8 * HOUR, count=8)]
    records += [
        event("sale", f"Berlin-s{i}", "Berlin", 9 * HOUR + i * MINUTE, quantity=1, unit_price=2.0)
        for i in range(1, 9)
    ]
    request = alert_id("restock_request", "Berlin", "milk", "Berlin-s3")
    records += [
        event("refund", "Berlin-r", "Berlin", DAY + 10 * HOUR, quantity=1, unit_price=2.0),
        event("restock", f"delivery-{request}", "Berlin", DAY + 12 * HOUR, quantity=39, truck_id="truck-01"),
        event("count", "Hamburg-c", "Hamburg", 8 * HOUR, count=20),
    ]
    records += [
        event(
            "sale", f"Hamburg-s{i}", "Hamburg", 2 * DAY + 10 * HOUR + i * MINUTE, quantity=2, unit_price=1.5
        )
        for i in range(3)
    ]
    records += [
        event("count", "Munich-c", "Munich", 8 * HOUR, count=10),
        event("sale", "Munich-s1", "Munich", 6 * DAY + 11 * HOUR, quantity=1, unit_price=4.0),
        event("sale", "Munich-s2", "Munich", 7 * DAY + 11 * HOUR, quantity=1, unit_price=100.0),  # next week
    ]
    return records


def use(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line builds its settings from the environment: hand it this test's."""
    for name, value in to_env(settings).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def history(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Resources]:
    base = make_settings()
    settings = base.replaced(
        aws={"incoming_queue": base.aws.restock_queue.replace("-restock", "-incoming")},
        history={
            "archive_cache": str(tmp_path / "cache"),
            "archive_mirror": str(tmp_path / "mirror"),
            # so that tables a `make demo` left in the working directory are not read instead
            "tables_catalog": str(tmp_path / "tables" / "catalog.db"),
            "tables_warehouse": str(tmp_path / "tables" / "warehouse"),
        },
    )
    resources = provision(settings)
    use(settings, monkeypatch)
    return settings, resources  # make_settings removes the delivery streams afterwards (moto allows 50)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def inbox(settings: Settings, queue_url: str) -> list[dict[str, Any]]:
    sqs = sync_client("sqs", settings)
    messages = []
    while got := sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=0
    ).get("Messages"):
        messages.extend(got)
        for m in got:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
    return messages


def stream_records(settings: Settings, read_stream: ReadStream) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with AioClients(settings, "kinesis") as clients:
            by_shard = await read_stream(clients["kinesis"], settings.aws.stream_name)
        return [record for records in by_shard.values() for record in records]

    return asyncio.run(read())


async def test_query_and_report_answer_from_the_archive(
    history: tuple[Settings, Resources], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    settings, resources = history
    good = workload()
    sent = [(data, orjson.loads(data)["store_id"]) for data in good]
    sent.append((good[3], "Berlin"))  # a redelivery: processed once, archived once
    sent.append((b'{"type":"sale","event_id":"bad","store_id":"Berlin"}', "Berlin"))  # rejected
    await produce(settings, sent)
    processor = await process_until_caught_up(settings, resources)
    assert processor.stats().duplicates_ignored == 1
    assert processor.inventory()["Berlin"] == {"milk": 8 - 8 + 1 + 39}

    produced = Counter((orjson.loads(d)["store_id"], orjson.loads(d)["type"]) for d in good)
    code, out, err = run_cli(
        [
            "query",
            "SELECT store_id, type, count(*) AS n FROM events GROUP BY ALL ORDER BY ALL",
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 0, err
    assert {(r["store_id"], r["type"]): r["n"] for r in json.loads(out)} == dict(produced)
    assert f"source: s3://{settings.aws.bucket}" in err

    code, out, err = run_cli(
        [
            "query",
            "SELECT store_id, CAST(ts AS DATE) AS day, SUM(quantity * unit_price) AS sales FROM events "
            "WHERE type = 'sale' GROUP BY 1, 2 ORDER BY 1, 2",
            "--format",
            "csv",
        ],
        capsys,
    )
    assert code == 0, err
    assert list(csv.reader(io.StringIO(out))) == [
        ["store_id", "day", "sales"],
        ["Berlin", "2026-08-03", "16.0"],
        ["Hamburg", "2026-08-05", "9.0"],
        ["Munich", "2026-08-09", "4.0"],
        ["Munich", "2026-08-10", "100.0"],
    ]
    code, out, _ = run_cli(
        ["query", "SELECT kind, count(*) AS n FROM alerts GROUP BY 1", "--format", "json"], capsys
    )
    assert {r["kind"]: r["n"] for r in json.loads(out)} == {
        "restock_request": 1,
        "out_of_stock": 1,
        "back_in_stock": 1,
    }
    assert any(p.is_file() for p in (tmp_path / "cache" / settings.aws.bucket / "events").rglob("*"))

    # The weekly report: S3 reports/2026-W32/ and a notice on the alerts topic.
    inbox(settings, resources.alerts_queue_url)  # the processor's own alerts, not what we look for
    code, out, err = run_cli(["report", "--week", "2026-W32"], capsys)
    assert code == 0, err
    s3 = sync_client("s3", settings)
    body = (
        s3.get_object(Bucket=settings.aws.bucket, Key="reports/2026-W32/report.csv")["Body"].read().decode()
    )
    rows = {r["store_id"]: r for r in csv.DictReader(io.StringIO(body))}
    assert sorted(rows) == ["Berlin", "Hamburg", "Munich"]
    berlin = rows["Berlin"]
    assert (float(berlin["revenue"]), int(berlin["refunds"]), float(berlin["refund_ratio"])) == (
        16.0,
        1,
        0.125,
    )
    assert (int(berlin["stock_outs"]), int(berlin["stock_outs_ongoing"])) == (1, 0)
    assert float(berlin["stock_out_hours_total"]) == round(
        (DAY + 10 * HOUR - (9 * HOUR + 8 * MINUTE)) / HOUR, 2
    )
    assert int(berlin["deliveries"]) == 1
    assert float(berlin["lead_time_min_avg"]) == (DAY + 12 * HOUR - (9 * HOUR + 3 * MINUTE)) / MINUTE
    assert float(rows["Hamburg"]["revenue"]) == 9.0
    assert float(rows["Munich"]["revenue"]) == 4.0  # next Monday's sale is next week's
    html = s3.get_object(Bucket=settings.aws.bucket, Key="reports/2026-W32/report.html")
    assert html["ContentType"].startswith("text/html")
    assert b'<svg role="img"' in html["Body"].read()
    (notice,) = [m for m in inbox(settings, resources.alerts_queue_url) if "weekly_report" in m["Body"]]
    assert notice["MessageAttributes"]["kind"]["StringValue"] == "weekly_report"
    message = json.loads(notice["Body"])
    assert message["csv_key"] == "reports/2026-W32/report.csv"
    assert (message["week"], message["stores"], message["revenue"]) == ("2026-W32", 3, 29.0)

    # The demo's mirror answers the same, with no AWS needed afterwards.
    mirrored = mirror_archive(s3, settings.aws.bucket, settings, tmp_path / "mirror")
    assert mirrored.objects > 0
    code, out, err = run_cli(
        [
            "query",
            "SELECT count(*) AS n FROM events",
            "--archive",
            str(tmp_path / "mirror"),
            "--format",
            "json",
        ],
        capsys,
    )
    assert json.loads(out) == [{"n": len(good)}]
    assert "local mirror" in err


def test_ingest_store_seed_then_again_changes_nothing(
    history: tuple[Settings, Resources], capsys: pytest.CaptureFixture[str], read_stream: ReadStream
) -> None:
    settings, resources = history
    seed = EXAMPLES / "store_seed.csv"
    digest = hashlib.sha256(seed.read_bytes()).hexdigest()[:20]

    code, out, err = run_cli(["ingest", str(seed)], capsys)
    assert code == 0, err
    assert "store_seed.csv" in out
    metrics = [json.loads(line) for line in err.splitlines() if '"_aws"' in line]
    assert [
        (m["RowsProcessed"], m["RowsSucceeded"], m["RowsRejected"], m["RowsErrored"]) for m in metrics
    ] == [(13, 6, 7, 0)]
    first = stream_records(settings, read_stream)
    ids = sorted(orjson.loads(r["Data"])["event_id"] for r in first)
    lines = [2, 3, 4, 5, 6, 14]
    assert ids == sorted([f"ingest-{digest}-{n}" for n in lines] + [f"ingest-{digest}-{n}-p" for n in lines])
    assert {r["PartitionKey"] for r in first} == {"Berlin", "Hamburg", "Munich"}

    s3 = sync_client("s3", settings)
    key = f"rejected/ingest/store_seed.csv/{digest}.jsonl"
    kept = [
        json.loads(x) for x in s3.get_object(Bucket=settings.aws.bucket, Key=key)["Body"].read().splitlines()
    ]
    assert [k["line"] for k in kept] == [7, 8, 9, 10, 11, 12, 13]
    assert kept[3]["record"] == "Berlin,Echo Dot,9"
    assert "duplicate" in kept[3]["reason"]

    code, _, err = run_cli(["ingest", str(seed)], capsys)  # the same file again
    assert code == 0, err
    both = stream_records(settings, read_stream)
    again = sorted(orjson.loads(r["Data"])["event_id"] for r in both)
    assert again == sorted(ids + ids)  # the same ids, sent again

    processor = asyncio.run(process_until_caught_up(settings, resources))  # main() runs its own loop
    assert processor.stats().duplicates_ignored == len(ids)  # so the second ingest changed nothing
    assert processor.inventory() == {
        "Berlin": {"echo-dot": 12, "fire-tv-stick": 0, "kindle-paperwhite": 7},
        "Hamburg": {"echo-dot": 5, "echo-show-8-2nd-gen": 3},
        "Munich": {"echo-pop": 6},
    }


async def test_watch_picks_up_uploads_to_incoming(
    history: tuple[Settings, Resources], read_stream: ReadStream
) -> None:
    settings, resources = history
    s3 = sync_client("s3", settings)
    inventory = (EXAMPLES / "warehouse_inventory.jsonl").read_bytes()
    reports: list[IngestReport] = []
    stop = asyncio.Event()
    async with AioClients(settings, "kinesis", "s3", "sqs") as clients:
        dead = UnsentRecords()
        writer = KinesisWriter(clients["kinesis"], settings.aws.stream_name, settings, on_dead_letter=dead)
        target = IngestTarget(writer, dead, clients["s3"], resources.bucket, settings)
        watcher = IngestWatcher(
            settings,
            resources.incoming_queue_url,
            clients["sqs"],
            target,
            wait_s=1,
            on_report=reports.append,
        )
        task = asyncio.create_task(watcher.run(stop))
        s3.put_object(Bucket=settings.aws.bucket, Key="incoming/wh/hourly 10.jsonl", Body=inventory)
        s3.put_object(Bucket=settings.aws.bucket, Key="incoming/empty.csv", Body=b"")
        s3.put_object(
            Bucket=settings.aws.bucket, Key="elsewhere/ignored.csv", Body=b"store,item,count\nA,b,1\n"
        )
        for _ in range(300):
            if watcher.stats.files + watcher.stats.refused >= 2:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 30)
        await writer.close()
        stream = await read_stream(clients["kinesis"], settings.aws.stream_name)

    assert watcher.stats.test_events == 1  # S3's test event when provisioning wired the queue
    assert (watcher.stats.files, watcher.stats.refused, watcher.stats.failed) == (1, 1, 0)
    (report,) = reports
    assert report.source == f"s3://{settings.aws.bucket}/incoming/wh/hourly 10.jsonl"
    assert report.figures() == {"processed": 13, "succeeded": 6, "rejected": 7, "errored": 0}
    digest = hashlib.sha256(inventory).hexdigest()[:20]
    counts = [orjson.loads(r["Data"]) for records in stream.values() for r in records]
    assert sorted(c["event_id"] for c in counts if c["type"] == "count") == sorted(
        f"ingest-{digest}-{n}" for n in (1, 2, 3, 4, 5, 13)
    )
    keys = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=settings.aws.bucket, Prefix="rejected/ingest/")["Contents"]
    ]
    assert f"rejected/ingest/hourly_10.jsonl/{digest}.jsonl" in keys
    (refusal_key,) = [k for k in keys if k.startswith("rejected/ingest/empty.csv/")]
    refusal = json.loads(s3.get_object(Bucket=settings.aws.bucket, Key=refusal_key)["Body"].read())
    assert "empty" in refusal["reason"]
    left = sync_client("sqs", settings).get_queue_attributes(
        QueueUrl=resources.incoming_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert left == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"}


def test_s3_reader_skips_partition_folders_and_reads_parquet_and_json(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The AWS layout (dt=/store_id= keys, Parquet from Firehose), read straight from S3."""
    settings = make_settings()
    s3 = sync_client("s3", settings)
    s3.create_bucket(Bucket=settings.aws.bucket)
    parquet = tmp_path / "part.parquet"
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT 'p1' AS event_id, 'sale' AS type, 'A' AS store_id, '2026-08-04T10:00:00.000Z' AS ts, "
        f"'milk' AS product_id, 3 AS quantity, 2.0 AS unit_price) TO '{parquet}' (FORMAT parquet)"
    )
    con.close()
    s3.put_object(
        Bucket=settings.aws.bucket, Key="events/dt=2026-08-04/store_id=A/p.parquet", Body=parquet.read_bytes()
    )
    for day in ("2026-08-03", "2026-08-04"):
        for store in ("A", "B"):
            if (day, store) == ("2026-08-04", "A"):
                continue
            record = orjson.loads(event("sale", f"{store}-{day}", store, 0, quantity=1, unit_price=1.0))
            record["ts"] = f"{day}T09:00:00.000Z"
            s3.put_object(
                Bucket=settings.aws.bucket,
                Key=f"events/dt={day}/store_id={store}/j",
                Body=orjson.dumps(record) + b"\n",
            )
    source = S3Archive(s3, settings.aws.bucket, settings, tmp_path / "cache")
    result = run_query(
        source,
        "SELECT event_id, quantity * unit_price FROM events WHERE store_id = 'A' AND dt >= '2026-08-04'",
    )
    assert result.rows == [("p1", 6.0)]
    assert "1 of 2 objects, 1 pruned" in result.source  # the dt=2026-08-03 folder was never listed
    everything = run_query(source, "SELECT count(*) FROM events", ArchiveFilter(stores=frozenset({"B"})))
    assert everything.rows == [(2,)]
