"""Provisioning against the embedded AWS, and the wiring it sets up behaving as the app relies on."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

import pytest

from config import Settings
from foundation.aws.clients import aio_client, sync_client
from foundation.aws.embedded import EmbeddedAws
from foundation.aws.provision import Resources, provision, resolve
from foundation.errors import ShelfstreamError

pytestmark = pytest.mark.integration


def test_provision_creates_everything(provisioned: tuple[Settings, Resources]) -> None:
    settings, resources = provisioned
    assert resources.stream_arn.endswith(f":stream/{settings.aws.stream_name}")
    assert resources.bucket == settings.aws.bucket

    s3 = sync_client("s3", settings)
    rules = s3.get_bucket_lifecycle_configuration(Bucket=settings.aws.bucket)["Rules"]
    expiring = {rule["Filter"]["Prefix"]: rule["Expiration"]["Days"] for rule in rules}
    assert expiring == {"events/": 30, "windows/": 30, "alerts/": 30, "rejected/": 30}
    block = s3.get_public_access_block(Bucket=settings.aws.bucket)["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"), True
    )

    firehose = sync_client("firehose", settings)
    for name, prefix in (
        (resources.archive_firehose, "events/"),
        (resources.windows_firehose, "windows/"),
        (resources.alerts_firehose, "alerts/"),
    ):
        description = firehose.describe_delivery_stream(DeliveryStreamName=name)["DeliveryStreamDescription"]
        assert description["DeliveryStreamType"] == "DirectPut"
        destination = description["Destinations"][0]["ExtendedS3DestinationDescription"]
        assert destination["BucketARN"] == f"arn:aws:s3:::{settings.aws.bucket}"
        assert destination["Prefix"] == prefix

    sqs = sync_client("sqs", settings)
    attributes = sqs.get_queue_attributes(QueueUrl=resources.restock_queue_url, AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    dlq_arn = sqs.get_queue_attributes(QueueUrl=resources.restock_dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    assert redrive["deadLetterTargetArn"] == dlq_arn
    assert int(redrive["maxReceiveCount"]) == settings.aws.max_receive_count
    assert attributes["VisibilityTimeout"] == "60"

    policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=resources.alerts_queue_url, AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )
    statement = policy["Statement"][0]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == resources.topic_arn
    assert statement["Action"] == "sqs:SendMessage"

    # Uploads under incoming/ notify the incoming queue (for `ingest --watch`), which lets S3 send.
    incoming_arn = sqs.get_queue_attributes(
        QueueUrl=resources.incoming_queue_url, AttributeNames=["QueueArn"]
    )["Attributes"]["QueueArn"]
    assert incoming_arn.endswith(f":{settings.aws.incoming_queue}")
    incoming_policy = json.loads(
        sqs.get_queue_attributes(QueueUrl=resources.incoming_queue_url, AttributeNames=["Policy"])[
            "Attributes"
        ]["Policy"]
    )["Statement"][0]
    assert incoming_policy["Principal"] == {"Service": "s3.amazonaws.com"}
    assert incoming_policy["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{settings.aws.bucket}"
    (notify,) = s3.get_bucket_notification_configuration(Bucket=settings.aws.bucket)["QueueConfigurations"]
    assert notify["QueueArn"] == incoming_arn
    assert notify["Events"] == ["s3:ObjectCreated:*"]
    assert notify["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "incoming/"}]

    # The shard clocks: one item per stream and shard, gone a week after the shard last moved.
    dynamodb = sync_client("dynamodb", settings)
    table = dynamodb.describe_table(TableName=resources.shard_clocks_table)["Table"]
    assert [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]] == [
        ("stream", "HASH"),
        ("shard_id", "RANGE"),
    ]
    ttl = dynamodb.describe_time_to_live(TableName=resources.shard_clocks_table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires_at")


def test_firehose_archive_lands_under_the_events_prefix(provisioned: tuple[Settings, Resources]) -> None:
    settings, resources = provisioned
    firehose = sync_client("firehose", settings)
    firehose.put_record_batch(
        DeliveryStreamName=resources.archive_firehose,
        Records=[{"Data": b'{"event_id":"e1"}\n'}, {"Data": b'{"event_id":"e2"}\n'}],
    )
    s3 = sync_client("s3", settings)
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=settings.aws.bucket).get("Contents", [])]
    assert len(keys) == 1
    assert keys[0].startswith(settings.prefixes.events)
    body = s3.get_object(Bucket=settings.aws.bucket, Key=keys[0])["Body"].read()
    assert body == b'{"event_id":"e1"}\n{"event_id":"e2"}\n'


def test_provision_twice_is_a_no_op(provisioned: tuple[Settings, Resources]) -> None:
    settings, first = provisioned
    second = provision(settings)
    assert second == first
    assert resolve(settings) == first

    kinesis = sync_client("kinesis", settings)
    summary = kinesis.describe_stream_summary(StreamName=settings.aws.stream_name)["StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == settings.aws.shard_count
    assert len(kinesis.list_shards(StreamName=settings.aws.stream_name)["Shards"]) == settings.aws.shard_count

    subscriptions = sync_client("sns", settings).list_subscriptions_by_topic(TopicArn=first.topic_arn)[
        "Subscriptions"
    ]
    assert len(subscriptions) == 1
    prefix = settings.aws.restock_queue.split("-restock")[0]
    queues = sync_client("sqs", settings).list_queues(QueueNamePrefix=prefix)["QueueUrls"]
    ours = [first.restock_queue_url, first.restock_dlq_url, first.alerts_queue_url, first.incoming_queue_url]
    assert sorted(queues) == sorted(url for url in ours if url.rsplit("/", 1)[-1].startswith(prefix))
    notify = sync_client("s3", settings).get_bucket_notification_configuration(Bucket=settings.aws.bucket)
    assert len(notify["QueueConfigurations"]) == 1
    rules = sync_client("s3", settings).get_bucket_lifecycle_configuration(Bucket=settings.aws.bucket)[
        "Rules"
    ]
    assert len(rules) == 4


def test_provision_keeps_an_existing_stream_and_converges_queue_settings(
    make_settings: Any, local_aws: EmbeddedAws
) -> None:
    settings = make_settings(aws={"shard_count": 3, "max_receive_count": 4})
    first = provision(settings)
    changed = settings.replaced(aws={"shard_count": 1, "max_receive_count": 7})
    second = provision(changed)
    assert second == first
    kinesis = sync_client("kinesis", settings)
    assert len(kinesis.list_shards(StreamName=settings.aws.stream_name)["Shards"]) == 3  # never resharded
    attributes = sync_client("sqs", settings).get_queue_attributes(
        QueueUrl=first.restock_queue_url, AttributeNames=["RedrivePolicy"]
    )["Attributes"]
    assert int(json.loads(attributes["RedrivePolicy"])["maxReceiveCount"]) == 7


def test_incoming_notifications_are_written_once_and_announce_uploads(make_settings: Any) -> None:
    settings = make_settings(aws={"incoming_queue": f"{make_settings().aws.restock_queue}-incoming"})
    first = provision(settings)
    provision(settings)  # unchanged: not written again (each write makes S3 send a test event)
    firehose = sync_client("firehose", settings)
    for name in (settings.aws.archive_firehose, settings.aws.windows_firehose, settings.aws.alerts_firehose):
        # moto, like AWS, allows 50 delivery streams per region; this test needs none of them.
        firehose.delete_delivery_stream(DeliveryStreamName=name, AllowForceDelete=True)
    s3 = sync_client("s3", settings)
    s3.put_object(Bucket=settings.aws.bucket, Key="incoming/Berlin stock.csv", Body=b"store,item,count\n")
    s3.put_object(Bucket=settings.aws.bucket, Key="elsewhere/ignored.csv", Body=b"store,item,count\n")
    sqs = sync_client("sqs", settings)
    bodies = []
    while got := sqs.receive_message(
        QueueUrl=first.incoming_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
    ).get("Messages"):
        bodies.extend(json.loads(m["Body"]) for m in got)
        for m in got:
            sqs.delete_message(QueueUrl=first.incoming_queue_url, ReceiptHandle=m["ReceiptHandle"])
    assert [b.get("Event") for b in bodies if "Event" in b] == ["s3:TestEvent"]
    (upload,) = [b for b in bodies if "Records" in b]
    key = upload["Records"][0]["s3"]["object"]["key"]
    assert " " not in key  # S3 URL-encodes the key in a notification
    assert unquote_plus(key) == "incoming/Berlin stock.csv"


def test_sns_alert_arrives_raw_with_attributes(provisioned: tuple[Settings, Resources]) -> None:
    settings, resources = provisioned
    alert = {"alert_id": "a-1", "kind": "anomaly", "store_id": "s-1", "severity": 80}
    sync_client("sns", settings).publish(
        TopicArn=resources.topic_arn,
        Message=json.dumps(alert),
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "anomaly"},
            "store_id": {"DataType": "String", "StringValue": "s-1"},
            "severity": {"DataType": "Number", "StringValue": "80"},
        },
    )
    messages = sync_client("sqs", settings).receive_message(
        QueueUrl=resources.alerts_queue_url, MessageAttributeNames=["All"], WaitTimeSeconds=2
    )["Messages"]
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"]) == alert  # raw: the alert itself, no SNS envelope
    attributes = messages[0]["MessageAttributes"]
    assert attributes["kind"]["StringValue"] == "anomaly"
    assert attributes["store_id"]["StringValue"] == "s-1"
    assert attributes["severity"] == {"DataType": "Number", "StringValue": "80"}


def test_unprocessed_restock_request_ends_in_the_dlq(provisioned: tuple[Settings, Resources]) -> None:
    settings, resources = provisioned
    sqs = sync_client("sqs", settings)
    sqs.send_message(QueueUrl=resources.restock_queue_url, MessageBody='{"alert_id":"r-1"}')
    for attempt in range(settings.aws.max_receive_count):
        got = sqs.receive_message(QueueUrl=resources.restock_queue_url, VisibilityTimeout=0)
        assert [m["Body"] for m in got.get("Messages", [])] == ['{"alert_id":"r-1"}'], attempt
    # One receive too many: SQS moves it to the DLQ instead of delivering it again.
    assert (
        sqs.receive_message(QueueUrl=resources.restock_queue_url, VisibilityTimeout=0).get("Messages") is None
    )
    dead = sqs.receive_message(QueueUrl=resources.restock_dlq_url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in dead] == ['{"alert_id":"r-1"}']


async def test_records_spread_over_shards_and_read_back_in_order(
    make_settings: Any, read_stream: Any
) -> None:
    settings = make_settings(aws={"shard_count": 4})
    provision(settings)
    stores = [f"store-{n:03d}" for n in range(20)]
    sent = [{"store_id": stores[i % len(stores)], "n": i} for i in range(300)]
    async with aio_client("kinesis", settings) as kinesis:
        for start in range(0, len(sent), 100):
            answer = await kinesis.put_records(
                StreamName=settings.aws.stream_name,
                Records=[
                    {"Data": json.dumps(event).encode(), "PartitionKey": event["store_id"]}
                    for event in sent[start : start + 100]
                ],
            )
            assert answer["FailedRecordCount"] == 0
        by_shard = await read_stream(kinesis, settings.aws.stream_name)

    assert len(by_shard) == 4
    assert sum(1 for records in by_shard.values() if records) > 1
    read = {shard: [json.loads(r["Data"]) for r in records] for shard, records in by_shard.items()}
    assert sorted(e["n"] for events in read.values() for e in events) == list(range(300))
    shard_of: dict[str, set[str]] = {}
    for shard, events in read.items():
        for event in events:
            shard_of.setdefault(event["store_id"], set()).add(shard)
        for store in stores:  # one store's events stay in the order they were sent
            ns = [e["n"] for e in events if e["store_id"] == store]
            assert ns == sorted(ns)
    assert all(len(shards) == 1 for shards in shard_of.values())


def test_resolve_on_a_missing_stack_names_what_is_missing(settings: Settings) -> None:
    with pytest.raises(ShelfstreamError) as caught:
        resolve(settings)
    message = str(caught.value)
    assert "\n" not in message
    assert "shelfstream provision" in message
    for name in (
        settings.aws.stream_name,
        settings.aws.bucket,
        settings.aws.alerts_topic,
        settings.aws.restock_dlq,
    ):
        assert repr(name) in message


def test_resolve_names_only_the_missing_piece(provisioned: tuple[Settings, Resources]) -> None:
    settings, resources = provisioned
    sync_client("sqs", settings).delete_queue(QueueUrl=resources.alerts_queue_url)
    with pytest.raises(ShelfstreamError, match="shelfstream provision") as caught:
        resolve(settings)
    message = str(caught.value)
    assert f"SQS queue {settings.aws.alerts_queue!r}" in message
    assert settings.aws.stream_name not in message
    assert settings.aws.bucket not in message
