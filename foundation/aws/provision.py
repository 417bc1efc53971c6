"""Create (``provision``) or look up (``resolve``) every AWS resource the app uses.

Idempotent by construction: each resource is looked up or created by name, and settings that can be
re-applied (bucket lifecycle, queue attributes, subscription attributes) are re-applied, so a second run
converges instead of failing or duplicating. Synchronous boto3: this is a one-shot command.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from config import Settings
from foundation.aws.clients import require_aws, sync_client
from foundation.errors import AwsError, ShelfstreamError
from foundation.timeunits import DAY_S

log = logging.getLogger(__name__)

# On real AWS the role is created by deploy/ under this name; moto accepts any role ARN.
DEFAULT_FIREHOSE_ROLE_NAME = "shelfstream-firehose"
RAW_RETENTION_DAYS = 30
RESTOCK_VISIBILITY_TIMEOUT_S = 60
DLQ_RETENTION_S = 14 * DAY_S  # the maximum: a dead letter is kept as long as SQS allows
FIREHOSE_BUFFER_S = 60
FIREHOSE_BUFFER_MB = 5
STREAM_WAIT_S = 300
FIREHOSE_WAIT_S = 300
INCOMING_VISIBILITY_TIMEOUT_S = 300  # ingesting one uploaded file may take minutes
INCOMING_NOTIFICATION_ID = "shelfstream-incoming"

_MISSING_QUEUE_CODES = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}


@dataclass(frozen=True)
class Resources:
    """Where everything is, as the rest of the app addresses it."""

    stream_arn: str
    bucket: str
    archive_firehose: str
    windows_firehose: str
    alerts_firehose: str
    topic_arn: str
    restock_queue_url: str
    restock_dlq_url: str
    alerts_queue_url: str
    deliveries_table: str
    incoming_queue_url: str
    shard_clocks_table: str


class _Clients:
    """One boto3 client per service for the duration of a command (building one costs ~50 ms)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = sync_client(service, self.settings)
        return self._clients[service]


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _mapped(service: str) -> Iterator[None]:
    """Turn SDK errors into the app's one error root, naming the service and operation."""
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise AwsError(service, exc.operation_name, _code(exc), str(error.get("Message", ""))) from exc
    except WaiterError as exc:
        raise ShelfstreamError(f"{service}: gave up waiting: {exc}") from exc
    except BotoCoreError as exc:
        raise ShelfstreamError(f"{service}: {exc}") from exc


# --- provision ------------------------------------------------------------------------------------


def provision(settings: Settings, firehose_role_arn: str | None = None) -> Resources:
    """Create whatever is missing and return where everything is; safe to run again.

    ``firehose_role_arn`` is the role Firehose assumes to write to the bucket; by default the role
    named ``shelfstream-firehose`` in the caller's account (what deploy/ creates).
    """
    require_aws()
    clients = _Clients(settings)
    began = time.perf_counter()
    stream_arn = _ensure_stream(clients)
    bucket = _ensure_bucket(clients)
    role_arn = firehose_role_arn or _default_role_arn(clients)
    for name, prefix in (
        (settings.aws.archive_firehose, settings.prefixes.events),
        (settings.aws.windows_firehose, settings.prefixes.windows),
        (settings.aws.alerts_firehose, settings.prefixes.alerts),
    ):
        _ensure_firehose(clients, name, prefix, role_arn)
    topic_arn = _ensure_topic(clients)
    _ensure_table(
        clients, settings.aws.deliveries_table, [("alert_id", "S", "HASH")]
    )  # the dispatchers' shared delivery log (conditional writes keyed by the request's alert_id)
    _ensure_table(
        clients,
        settings.aws.shard_clocks_table,
        [("stream", "S", "HASH"), ("shard_id", "S", "RANGE")],
        ttl="expires_at",
    )  # each shard's event time, for KCL record processors whose shard went silent
    dlq_url, dlq_arn = _ensure_queue(
        clients, settings.aws.restock_dlq, {"MessageRetentionPeriod": str(DLQ_RETENTION_S)}
    )
    restock_url, _ = _ensure_queue(
        clients,
        settings.aws.restock_queue,
        {
            "VisibilityTimeout": str(RESTOCK_VISIBILITY_TIMEOUT_S),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.aws.max_receive_count)}
            ),
        },
    )
    alerts_url = _subscribed_queue(clients, settings.aws.alerts_queue, {}, topic_arn)
    incoming_url, incoming_arn = _ensure_queue(
        clients, settings.aws.incoming_queue, {"VisibilityTimeout": str(INCOMING_VISIBILITY_TIMEOUT_S)}
    )
    _allow_bucket_to_notify(clients, incoming_url, incoming_arn, bucket)
    _ensure_incoming_notification(clients, bucket, incoming_arn)
    resources = Resources(
        stream_arn=stream_arn,
        bucket=bucket,
        archive_firehose=settings.aws.archive_firehose,
        windows_firehose=settings.aws.windows_firehose,
        alerts_firehose=settings.aws.alerts_firehose,
        topic_arn=topic_arn,
        restock_queue_url=restock_url,
        restock_dlq_url=dlq_url,
        alerts_queue_url=alerts_url,
        deliveries_table=settings.aws.deliveries_table,
        incoming_queue_url=incoming_url,
        shard_clocks_table=settings.aws.shard_clocks_table,
    )
    log.info("provisioned", extra={"seconds": round(time.perf_counter() - began, 3)})
    return resources


def _ensure_stream(clients: _Clients) -> str:
    settings = clients.settings
    kinesis = clients("kinesis")
    with _mapped("kinesis"):
        try:
            kinesis.create_stream(StreamName=settings.aws.stream_name, ShardCount=settings.aws.shard_count)
            log.info(
                "created stream",
                extra={"stream": settings.aws.stream_name, "shards": settings.aws.shard_count},
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":
                raise
        kinesis.get_waiter("stream_exists").wait(
            StreamName=settings.aws.stream_name,
            WaiterConfig={"Delay": 1, "MaxAttempts": STREAM_WAIT_S},
        )
        summary = kinesis.describe_stream_summary(StreamName=settings.aws.stream_name)[
            "StreamDescriptionSummary"
        ]
    open_shards = int(summary.get("OpenShardCount", settings.aws.shard_count))
    if open_shards != settings.aws.shard_count:
        # Resharding is an operator's decision (it splits/merges live shards), never a side effect.
        log.warning(
            "stream kept with a different shard count",
            extra={
                "stream": settings.aws.stream_name,
                "open_shards": open_shards,
                "wanted": settings.aws.shard_count,
            },
        )
    return str(summary["StreamARN"])


def _ensure_bucket(clients: _Clients) -> str:
    settings = clients.settings
    s3 = clients("s3")
    bucket = settings.aws.bucket
    with _mapped("s3"):
        try:
            s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING_BUCKET_CODES:
                raise
            _create_bucket(s3, bucket)
        s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        )
        s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": lifecycle_rules(settings)}
        )
    return bucket


def _create_bucket(s3: Any, bucket: str) -> None:
    region = s3.meta.region_name
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region and region != "us-east-1":  # us-east-1 rejects an explicit LocationConstraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
        log.info("created bucket", extra={"bucket": bucket, "region": region})
    except ClientError as exc:
        if _code(exc) == "BucketAlreadyOwnedByYou":
            return
        if _code(exc) == "BucketAlreadyExists":
            raise ShelfstreamError(
                f"S3 bucket name {bucket!r} is taken by another account: "
                "choose another with SHELFSTREAM_AWS__BUCKET"
            ) from exc
        raise


def lifecycle_rules(settings: Settings) -> list[dict[str, Any]]:
    """Raw data (events, windows, rejected) expires; checkpoints and reports stay."""
    prefixes = dict.fromkeys(
        (
            settings.prefixes.events,
            settings.prefixes.windows,
            settings.prefixes.alerts,
            settings.prefixes.rejected,
        )
    )
    return [
        {
            "ID": f"expire-raw-{prefix.strip('/').replace('/', '-') or 'root'}",
            "Filter": {"Prefix": prefix},
            "Status": "Enabled",
            "Expiration": {"Days": RAW_RETENTION_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
        for prefix in prefixes
    ]


def _default_role_arn(clients: _Clients) -> str:
    sts = clients("sts")
    with _mapped("sts"):
        arn = str(sts.get_caller_identity()["Arn"])
    partition, account = arn.split(":")[1], arn.split(":")[4]
    return f"arn:{partition}:iam::{account}:role/{DEFAULT_FIREHOSE_ROLE_NAME}"


def _ensure_firehose(clients: _Clients, name: str, prefix: str, role_arn: str) -> None:
    settings = clients.settings
    firehose = clients("firehose")
    partition = role_arn.split(":")[1] if role_arn.count(":") >= 5 else "aws"
    with _mapped("firehose"):
        try:
            firehose.create_delivery_stream(
                DeliveryStreamName=name,
                DeliveryStreamType="DirectPut",
                ExtendedS3DestinationConfiguration={
                    "RoleARN": role_arn,
                    "BucketARN": f"arn:{partition}:s3:::{settings.aws.bucket}",
                    "Prefix": prefix,
                    "ErrorOutputPrefix": f"firehose-errors/{name}/",
                    "BufferingHints": {
                        "IntervalInSeconds": FIREHOSE_BUFFER_S,
                        "SizeInMBs": FIREHOSE_BUFFER_MB,
                    },
                    # Uncompressed: moto never compresses, so readers see one format everywhere.
                    "CompressionFormat": "UNCOMPRESSED",
                },
            )
            log.info("created delivery stream", extra={"firehose": name, "prefix": prefix})
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":
                raise
        deadline = time.monotonic() + FIREHOSE_WAIT_S
        delay = 0.2
        while True:
            description = firehose.describe_delivery_stream(DeliveryStreamName=name)[
                "DeliveryStreamDescription"
            ]
            status = description["DeliveryStreamStatus"]
            if status == "ACTIVE":
                break
            if status != "CREATING" or time.monotonic() > deadline:
                raise ShelfstreamError(f"firehose delivery stream {name!r} is {status}, not ACTIVE")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    for destination in description.get("Destinations", []):
        existing = destination.get("ExtendedS3DestinationDescription", {}).get("Prefix")
        if existing is not None and existing != prefix:
            log.warning(
                "delivery stream kept with a different prefix",
                extra={"firehose": name, "prefix": existing, "wanted": prefix},
            )


def _ensure_table(
    clients: _Clients, name: str, keys: list[tuple[str, str, str]], ttl: str | None = None
) -> None:
    """An on-demand DynamoDB table with the given (attribute, type, key type) keys, and items expiring
    at their `ttl` attribute (epoch seconds) when one is named."""
    dynamodb = clients("dynamodb")
    with _mapped("dynamodb"):
        try:
            dynamodb.create_table(
                TableName=name,
                AttributeDefinitions=[{"AttributeName": a, "AttributeType": t} for a, t, _ in keys],
                KeySchema=[{"AttributeName": a, "KeyType": k} for a, _, k in keys],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if _code(exc) != "ResourceInUseException":
                raise
        dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        if ttl is not None:
            status = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            if status.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
                dynamodb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
                )


def _ensure_topic(clients: _Clients) -> str:
    settings = clients.settings
    sns = clients("sns")
    with _mapped("sns"):
        return str(sns.create_topic(Name=settings.aws.alerts_topic)["TopicArn"])  # idempotent by name


def _ensure_queue(clients: _Clients, name: str, attributes: dict[str, str]) -> tuple[str, str]:
    """Create the queue, or re-apply ``attributes`` to an existing one (CreateQueue would refuse)."""
    sqs = clients("sqs")
    with _mapped("sqs"):
        try:
            url = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
            if attributes:
                sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        except ClientError as exc:
            if _code(exc) not in _MISSING_QUEUE_CODES:
                raise
            url = str(sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"])
            log.info("created queue", extra={"queue": name})
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, str(arn)


def _allow_topic_to_send(clients: _Clients, queue_url: str, queue_arn: str, topic_arn: str) -> None:
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowAlertsTopic",
                "Effect": "Allow",
                "Principal": {"Service": "sns.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    sqs = clients("sqs")
    with _mapped("sqs"):
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def _allow_bucket_to_notify(clients: _Clients, queue_url: str, queue_arn: str, bucket: str) -> None:
    partition = queue_arn.split(":")[1] if queue_arn.count(":") >= 5 else "aws"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowArchiveBucketUploads",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"}},
            }
        ],
    }
    sqs = clients("sqs")
    with _mapped("sqs"):
        sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})


def _ensure_incoming_notification(clients: _Clients, bucket: str, queue_arn: str) -> None:
    """Uploads under ``incoming_prefix`` notify the incoming queue (for ``ingest --watch``).

    Other notifications on the bucket are kept; ours is written only when it differs, because S3
    sends a test event to every queue of the configuration each time it is written.
    """
    wanted = {
        "Id": INCOMING_NOTIFICATION_ID,
        "QueueArn": queue_arn,
        "Events": ["s3:ObjectCreated:*"],
        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": clients.settings.prefixes.incoming}]}},
    }
    s3 = clients("s3")
    with _mapped("s3"):
        current = s3.get_bucket_notification_configuration(Bucket=bucket)
        current.pop("ResponseMetadata", None)
        queues = current.get("QueueConfigurations", [])
        ours = [q for q in queues if q.get("Id") == INCOMING_NOTIFICATION_ID]
        if len(ours) == 1 and _same_notification(ours[0], wanted):
            return
        current["QueueConfigurations"] = [
            *(q for q in queues if q.get("Id") != INCOMING_NOTIFICATION_ID),
            wanted,
        ]
        s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=current)
        log.info("bucket notifies the incoming queue", extra={"bucket": bucket, "queue": queue_arn})


def _same_notification(have: dict[str, Any], want: dict[str, Any]) -> bool:
    def rules(config: dict[str, Any]) -> list[tuple[str, str]]:
        found = config.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        return sorted((str(r.get("Name", "")).lower(), str(r.get("Value", ""))) for r in found)

    return (
        have.get("QueueArn") == want["QueueArn"]
        and sorted(have.get("Events", [])) == sorted(want["Events"])
        and rules(have) == rules(want)
    )


def _ensure_raw_subscription(clients: _Clients, topic_arn: str, queue_arn: str) -> str:
    sns = clients("sns")
    with _mapped("sns"):
        for page in sns.get_paginator("list_subscriptions_by_topic").paginate(TopicArn=topic_arn):
            for sub in page.get("Subscriptions", []):
                if sub.get("Protocol") == "sqs" and sub.get("Endpoint") == queue_arn:
                    arn = str(sub["SubscriptionArn"])
                    sns.set_subscription_attributes(
                        SubscriptionArn=arn, AttributeName="RawMessageDelivery", AttributeValue="true"
                    )
                    return arn
        arn = str(
            sns.subscribe(
                TopicArn=topic_arn,
                Protocol="sqs",
                Endpoint=queue_arn,
                Attributes={"RawMessageDelivery": "true"},
                ReturnSubscriptionArn=True,
            )["SubscriptionArn"]
        )
        log.info("subscribed queue to topic", extra={"topic": topic_arn, "queue": queue_arn})
        return arn


# --- resolve --------------------------------------------------------------------------------------


def resolve(settings: Settings) -> Resources:
    """Look everything up without creating anything; one clear error naming all that is missing."""
    require_aws()
    clients = _Clients(settings)
    missing: list[str] = []

    kinesis = clients("kinesis")
    stream_arn = ""
    with _mapped("kinesis"):
        try:
            summary = kinesis.describe_stream_summary(StreamName=settings.aws.stream_name)
            stream_arn = str(summary["StreamDescriptionSummary"]["StreamARN"])
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            missing.append(f"Kinesis stream {settings.aws.stream_name!r}")

    s3 = clients("s3")
    with _mapped("s3"):
        try:
            s3.head_bucket(Bucket=settings.aws.bucket)
        except ClientError as exc:
            if _code(exc) not in _MISSING_BUCKET_CODES:
                raise
            missing.append(f"S3 bucket {settings.aws.bucket!r}")

    firehose = clients("firehose")
    with _mapped("firehose"):
        for name in (
            settings.aws.archive_firehose,
            settings.aws.windows_firehose,
            settings.aws.alerts_firehose,
        ):
            try:
                firehose.describe_delivery_stream(DeliveryStreamName=name)
            except ClientError as exc:
                if _code(exc) != "ResourceNotFoundException":
                    raise
                missing.append(f"Firehose delivery stream {name!r}")

    topic_arn = _find_topic(clients)
    if topic_arn is None:
        missing.append(f"SNS topic {settings.aws.alerts_topic!r}")

    with _mapped("dynamodb"):
        try:
            clients("dynamodb").describe_table(TableName=settings.aws.deliveries_table)
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            missing.append(f"DynamoDB table {settings.aws.deliveries_table!r}")

    urls: dict[str, str] = {}
    sqs = clients("sqs")
    with _mapped("sqs"):
        for name in (
            settings.aws.restock_queue,
            settings.aws.restock_dlq,
            settings.aws.alerts_queue,
            settings.aws.incoming_queue,
        ):
            try:
                urls[name] = str(sqs.get_queue_url(QueueName=name)["QueueUrl"])
            except ClientError as exc:
                if _code(exc) not in _MISSING_QUEUE_CODES:
                    raise
                missing.append(f"SQS queue {name!r}")

    if missing or topic_arn is None:
        raise ShelfstreamError(
            f"missing AWS resources: {', '.join(missing)}; run `shelfstream provision` first"
        )
    return Resources(
        stream_arn=stream_arn,
        bucket=settings.aws.bucket,
        archive_firehose=settings.aws.archive_firehose,
        windows_firehose=settings.aws.windows_firehose,
        alerts_firehose=settings.aws.alerts_firehose,
        topic_arn=topic_arn,
        restock_queue_url=urls[settings.aws.restock_queue],
        restock_dlq_url=urls[settings.aws.restock_dlq],
        alerts_queue_url=urls[settings.aws.alerts_queue],
        deliveries_table=settings.aws.deliveries_table,
        incoming_queue_url=urls[settings.aws.incoming_queue],
        shard_clocks_table=settings.aws.shard_clocks_table,
    )


def _find_topic(clients: _Clients) -> str | None:
    settings = clients.settings
    """SNS has no lookup by name; a topic ARN ends with ``:<name>``."""
    sns = clients("sns")
    with _mapped("sns"):
        for page in sns.get_paginator("list_topics").paginate():
            for topic in page.get("Topics", []):
                arn = str(topic["TopicArn"])
                if arn.rsplit(":", 1)[-1] == settings.aws.alerts_topic:
                    return arn
    return None


def _subscribed_queue(clients: _Clients, name: str, attributes: dict[str, str], topic_arn: str) -> str:
    url, arn = _ensure_queue(clients, name, attributes)
    _allow_topic_to_send(clients, url, arn, topic_arn)
    _ensure_raw_subscription(clients, topic_arn, arn)
    return url


def ensure_topic_queue(settings: Settings, name: str, topic_arn: str, attributes: dict[str, str]) -> str:
    """An SQS queue subscribed (raw delivery) to `topic_arn`, created or re-applied; returns its URL.

    For readers of the alerts topic besides the app's own inbox (the dashboard has one)."""
    return _subscribed_queue(_Clients(settings), name, attributes, topic_arn)
