"""The CloudFormation templates in deploy/cloudformation: cfn-lint clean, least-privilege IAM, and in
step with the app (Settings names, the event contract, the KCL properties). Pure: no AWS, no sockets."""

from __future__ import annotations

import datetime as dt
import json
import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from config.settings import Settings, env_name, members
from foundation import contract

ROOT = Path(__file__).resolve().parents[2]
CFN_DIR = ROOT / "deploy" / "cloudformation"
TEMPLATES = sorted(CFN_DIR.glob("*.yaml"))
MAIN = CFN_DIR / "shelfstream.yaml"
KCL_PROPERTIES = ROOT / "deploy" / "kcl" / "shelfstream.properties"

# Actions that have no resource-level permissions, so IAM only accepts them with Resource "*";
# the value names a condition key the statement must then use to narrow them (None: no such key).
ACTIONS_WITHOUT_RESOURCES: dict[str, str | None] = {
    "cloudwatch:PutMetricData": "cloudwatch:namespace",
    "ecr:GetAuthorizationToken": None,
    "sns:ListTopics": None,
    "kinesis:ListStreams": None,
    "sqs:ListQueues": None,
    "firehose:ListDeliveryStreams": None,
    "athena:ListWorkGroups": None,
    "logs:DescribeLogGroups": None,
    "sts:GetCallerIdentity": None,
}
# Template parameters that are themselves names of this deployment's resources.
SCOPING_PARAMETERS = {"AppRepositoryName", "KclRepositoryName", "GlueDatabaseName"}
# Account-level ARNs IAM requires next to the stack's own (in the same statement), and why.
REQUIRED_ACCOUNT_ARNS = {
    # Glue authorizes GetTable & co. on the catalog, the database and the table together.
    "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog",
}


# --- a YAML loader that understands CloudFormation's short-form tags ---


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader plus !Ref, !Sub, !GetAtt, ...: each becomes its long form ({"Ref": x}, {"Fn::Sub": x})."""


def _construct_tag(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "Condition":
        return {"Condition": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=CfnLoader)
    assert isinstance(loaded, dict)
    return loaded


# --- the IAM checker ---

IDENTITY_POLICY_TYPES = {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}
RESOURCE_POLICY_PROPERTY = {
    "AWS::KMS::Key": "KeyPolicy",
    "AWS::S3::BucketPolicy": "PolicyDocument",
    "AWS::SQS::QueuePolicy": "PolicyDocument",
    "AWS::SNS::TopicPolicy": "PolicyDocument",
}


@dataclass(frozen=True)
class PolicyDoc:
    where: str
    kind: str  # "identity", "trust" or "resource"
    resource_type: str
    document: dict[str, Any]


def policy_documents(template: dict[str, Any]) -> Iterator[PolicyDoc]:
    """Every policy document in the template: identity, role trust and resource-based policies."""
    for logical_id, resource in template.get("Resources", {}).items():
        rtype = resource.get("Type", "")
        props = resource.get("Properties", {})
        if rtype == "AWS::IAM::Role":
            yield PolicyDoc(f"{logical_id} trust", "trust", rtype, props["AssumeRolePolicyDocument"])
            for policy in props.get("Policies", []):
                name = f"{logical_id}/{policy['PolicyName']}"
                yield PolicyDoc(name, "identity", rtype, policy["PolicyDocument"])
        elif rtype in IDENTITY_POLICY_TYPES:
            yield PolicyDoc(logical_id, "identity", rtype, props["PolicyDocument"])
        elif rtype in RESOURCE_POLICY_PROPERTY:
            yield PolicyDoc(logical_id, "resource", rtype, props[RESOURCE_POLICY_PROPERTY[rtype]])


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _references(value: Any) -> set[str]:
    """Names a CloudFormation value refers to: Ref/GetAtt targets and ${...} variables of Fn::Sub."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "Ref" in value:
            found.add(str(value["Ref"]))
        if "Fn::GetAtt" in value:
            found.add(str(_as_list(value["Fn::GetAtt"])[0]))
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
            for name in re.findall(r"\$\{(?!!)([^}]+)\}", text):
                found.add(name.split(".", 1)[0])
            for inner in variables.values():
                found |= _references(inner)
        for key, inner in value.items():
            if key not in {"Ref", "Fn::GetAtt", "Fn::Sub"}:
                found |= _references(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _references(inner)
    return found


def is_scoped(resource: Any, own: set[str]) -> bool:
    """True when a Resource entry names something of this stack (its resources or its name)."""
    if isinstance(resource, str):
        return False  # a literal ARN (or "*") names nothing of this stack
    return bool(_references(resource) & (own | {"AWS::StackName"}))


def statement_problems(doc: PolicyDoc, template_ids: set[str]) -> list[str]:
    problems: list[str] = []
    statements = _as_list(doc.document.get("Statement", []))
    for index, stmt in enumerate(statements):
        label = f"{doc.where} statement {stmt.get('Sid', index)}"
        if stmt.get("Effect") != "Allow":
            continue  # a Deny only takes permissions away (e.g. the TLS-only bucket policy's s3:*)
        if "NotAction" in stmt or "NotResource" in stmt:
            problems.append(f"{label}: NotAction/NotResource in an Allow grants everything else")
        actions = [a for a in _as_list(stmt.get("Action", [])) if isinstance(a, str)]
        if not actions:
            problems.append(f"{label}: no literal actions")
        for action in actions:
            if "*" in action or "?" in action:
                problems.append(f"{label}: wildcard action {action!r}")
        if doc.kind == "trust":
            continue
        principal = stmt.get("Principal")
        if doc.kind == "resource" and (
            principal == "*" or (isinstance(principal, dict) and "*" in principal.values())
        ):
            problems.append(f"{label}: Allow to every principal")
        resources = _as_list(stmt.get("Resource", []))
        if doc.kind == "resource" and doc.resource_type == "AWS::KMS::Key":
            continue  # in a key policy, Resource "*" is the key itself
        if any(r == "*" for r in resources):
            for action in actions:
                if action not in ACTIONS_WITHOUT_RESOURCES:
                    problems.append(f"{label}: Resource '*' with {action!r}, which supports resource ARNs")
                    continue
                needed = ACTIONS_WITHOUT_RESOURCES[action]
                conditions = stmt.get("Condition", {})
                keys = {key for block in conditions.values() for key in block}
                if needed is not None and needed not in keys:
                    problems.append(f"{label}: {action!r} on '*' without a {needed} condition")
            if len(resources) > 1:
                problems.append(f"{label}: '*' mixed with ARNs")
            continue
        scoped = [r for r in resources if is_scoped(r, template_ids)]
        for resource in resources:
            if resource in scoped:
                continue
            if scoped and isinstance(resource, dict) and resource.get("Fn::Sub") in REQUIRED_ACCOUNT_ARNS:
                continue
            problems.append(f"{label}: resource {resource!r} is not one of this stack's")
    return problems


def check_template_policies(template: dict[str, Any]) -> list[str]:
    ids = set(template.get("Resources", {})) | SCOPING_PARAMETERS
    return [p for doc in policy_documents(template) for p in statement_problems(doc, ids)]


def _doc(statement: dict[str, Any], kind: str = "identity", rtype: str = "AWS::IAM::Role") -> PolicyDoc:
    return PolicyDoc("test", kind, rtype, {"Version": "2012-10-17", "Statement": [statement]})


def _problems(statement: dict[str, Any], kind: str = "identity", rtype: str = "AWS::IAM::Role") -> list[str]:
    return statement_problems(_doc(statement, kind, rtype), {"Bucket", "Stream"})


# --- the checker catches what it is for ---

SCOPED = {"Fn::GetAtt": ["Stream", "Arn"]}


@pytest.mark.parametrize("action", ["*", "s3:*", "s3:Get*", "kinesis:*Records", "sqs:?endMessage"])
def test_checker_rejects_wildcard_actions(action: str) -> None:
    problems = _problems({"Effect": "Allow", "Action": ["s3:GetObject", action], "Resource": SCOPED})
    assert problems
    assert "wildcard action" in problems[0]


def test_checker_rejects_wildcard_actions_in_resource_policies_and_trust_policies() -> None:
    stmt = {
        "Effect": "Allow",
        "Principal": {"Service": "sns.amazonaws.com"},
        "Action": "sqs:*",
        "Resource": SCOPED,
    }
    assert _problems(stmt, "resource", "AWS::SQS::QueuePolicy")
    trust = {"Effect": "Allow", "Principal": {"Service": "ecs-tasks.amazonaws.com"}, "Action": "sts:*"}
    assert _problems(trust, "trust")


def test_checker_rejects_star_resource_for_actions_with_resource_arns() -> None:
    problems = _problems({"Effect": "Allow", "Action": "kinesis:PutRecords", "Resource": "*"})
    assert problems == [
        "test statement 0: Resource '*' with 'kinesis:PutRecords', which supports resource ARNs"
    ]


def test_checker_allows_star_resource_only_for_allow_listed_actions_with_their_condition() -> None:
    assert not _problems({"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"})
    unconditioned = {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"}
    assert _problems(unconditioned)
    conditioned = dict(unconditioned, Condition={"StringEquals": {"cloudwatch:namespace": "shelfstream"}})
    assert not _problems(conditioned)
    mixed = {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage"], "Resource": "*"}
    assert _problems(mixed)


def test_checker_rejects_resources_outside_the_stack() -> None:
    assert _problems({"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::someone-else/*"})
    elsewhere = {"Fn::Sub": "arn:${AWS::Partition}:s3:::other-bucket/*"}
    assert _problems({"Effect": "Allow", "Action": "s3:GetObject", "Resource": elsewhere})
    own = {"Fn::Sub": "${Bucket.Arn}/events/*"}
    assert not _problems({"Effect": "Allow", "Action": "s3:GetObject", "Resource": own})
    by_stack_name = {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:us-east-1:1:table/${AWS::StackName}-x"}
    assert not _problems({"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": by_stack_name})


def test_checker_accepts_the_glue_catalog_only_next_to_the_stacks_own_tables() -> None:
    catalog = {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"}
    table = {"Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:table/${Bucket}/x"}
    assert not _problems({"Effect": "Allow", "Action": "glue:GetTable", "Resource": [catalog, table]})
    assert _problems({"Effect": "Allow", "Action": "glue:GetTable", "Resource": [catalog]})


def test_checker_rejects_not_action_and_open_principals_but_ignores_denies() -> None:
    assert _problems({"Effect": "Allow", "NotAction": "iam:CreateUser", "Resource": SCOPED})
    open_principal = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": SCOPED}
    assert _problems(open_principal, "resource", "AWS::S3::BucketPolicy")
    tls_only = {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}
    assert not _problems(tls_only, "resource", "AWS::S3::BucketPolicy")


def test_checker_finds_a_wildcard_added_to_a_real_template() -> None:
    template = load_template(MAIN)
    role = template["Resources"]["DispatcherTaskRole"]["Properties"]
    role["Policies"][0]["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["DeliveriesTable", "Arn"]}}
    )
    problems = check_template_policies(template)
    assert any("DispatcherTaskRole/dispatcher" in p and "'dynamodb:*'" in p for p in problems)


def test_yaml_loader_turns_short_forms_into_long_forms() -> None:
    text = "a: !Ref X\nb: !GetAtt Y.Arn\nc: !Sub '${Z}-q'\nd: !Join ['', [!Ref X, b]]\n"
    loaded = yaml.load(text, Loader=CfnLoader)
    assert loaded == {
        "a": {"Ref": "X"},
        "b": {"Fn::GetAtt": ["Y", "Arn"]},
        "c": {"Fn::Sub": "${Z}-q"},
        "d": {"Fn::Join": ["", [{"Ref": "X"}, "b"]]},
    }


# --- the real templates ---


def test_there_are_templates() -> None:
    assert MAIN in TEMPLATES
    assert CFN_DIR / "ecr.yaml" in TEMPLATES


@pytest.mark.slow  # seconds each: in `make test`, not the fast lane
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_cfn_lint_finds_nothing(path: Path) -> None:
    """No errors, no warnings, and no informational findings either (none are waived)."""
    from cfnlint.api import ManualArgs, lint_file

    matches = lint_file(path, config=ManualArgs(regions=["us-east-1"], include_checks=["I"]))
    assert [str(m) for m in matches] == []


@pytest.mark.slow  # seconds each: in `make test`, not the fast lane
def test_cfn_lint_is_not_vacuous(tmp_path: Path) -> None:
    from cfnlint.api import ManualArgs, lint_file

    broken = load_template(MAIN)
    broken["Resources"]["EventStream"]["Properties"]["ShardCount"] = "many"
    broken["Resources"]["Cluster"]["Properties"]["NoSuchProperty"] = 1
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    rules = {m.rule.id for m in lint_file(path, config=ManualArgs(regions=["us-east-1"]))}
    assert any(rule.startswith("E") for rule in rules)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_iam_policies_are_least_privilege(path: Path) -> None:
    template = load_template(path)
    assert check_template_policies(template) == []


def test_iam_checker_covers_every_role_and_resource_policy() -> None:
    template = load_template(MAIN)
    docs = list(policy_documents(template))
    where = {d.where.split("/")[0].split(" ")[0] for d in docs}
    roles = {k for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    assert roles <= where
    assert {"Key", "ArchiveBucketPolicy", "AlertsInboxQueuePolicy", "AlertsTopicPolicy"} <= where
    assert "ResolveResourcesPolicy" in where
    statements = sum(len(_as_list(d.document["Statement"])) for d in docs if d.kind == "identity")
    assert statements >= 30


def test_each_service_has_its_own_task_role_and_one_execution_role() -> None:
    resources = load_template(MAIN)["Resources"]
    task_defs = {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::ECS::TaskDefinition"}
    assert set(task_defs) == {
        "ProcessorTaskDefinition",
        "DispatcherTaskDefinition",
        "ProducerTaskDefinition",
        "IngestTaskDefinition",
        "ReportTaskDefinition",
        "HistoryTaskDefinition",
        "WarmStartTaskDefinition",
    }
    task_roles = [props["TaskRoleArn"]["Fn::GetAtt"][0] for props in task_defs.values()]
    assert len(set(task_roles)) == len(task_roles)
    assert {props["ExecutionRoleArn"]["Fn::GetAtt"][0] for props in task_defs.values()} == {
        "TaskExecutionRole"
    }


# --- in step with the app ---


def _containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::ECS::TaskDefinition":
            for container in resource["Properties"]["ContainerDefinitions"]:
                out[f"{logical_id}/{container['Name']}"] = container
    return out


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: item["Value"] for item in container.get("Environment", [])}


def test_container_environment_uses_only_settings_names() -> None:
    names = {env_name(group, member) for group, fields in members().items() for member in fields}
    for name, container in _containers(load_template(MAIN)).items():
        for var in _env(container):
            if var.startswith("SHELFSTREAM_"):
                assert var in names, f"{name}: {var} is not a setting's (grouped) name"


def test_every_container_is_told_where_every_resource_is() -> None:
    expected = {
        "SHELFSTREAM_AWS__STREAM_NAME": {"Ref": "EventStream"},
        "SHELFSTREAM_AWS__BUCKET": {"Ref": "ArchiveBucket"},
        "SHELFSTREAM_AWS__ARCHIVE_FIREHOSE": {"Ref": "ArchiveFirehose"},
        "SHELFSTREAM_AWS__WINDOWS_FIREHOSE": {"Ref": "WindowsFirehose"},
        "SHELFSTREAM_AWS__ALERTS_TOPIC": {"Fn::GetAtt": ["AlertsTopic", "TopicName"]},
        "SHELFSTREAM_AWS__RESTOCK_QUEUE": {"Fn::GetAtt": ["RestockQueue", "QueueName"]},
        "SHELFSTREAM_AWS__RESTOCK_DLQ": {"Fn::GetAtt": ["RestockDeadLetterQueue", "QueueName"]},
        "SHELFSTREAM_AWS__ALERTS_QUEUE": {"Fn::GetAtt": ["AlertsInboxQueue", "QueueName"]},
        "SHELFSTREAM_AWS__ALERTS_FIREHOSE": {"Ref": "AlertsFirehose"},
        "SHELFSTREAM_AWS__INCOMING_QUEUE": {"Fn::GetAtt": ["IncomingQueue", "QueueName"]},
        "SHELFSTREAM_AWS__DELIVERIES_TABLE": {"Ref": "DeliveriesTable"},
        "SHELFSTREAM_AWS__SHARD_CLOCKS_TABLE": {"Ref": "ShardClocksTable"},
        "AWS_REGION": {"Ref": "AWS::Region"},
    }
    for name, container in _containers(load_template(MAIN)).items():
        env = _env(container)
        for var, value in expected.items():
            assert env.get(var) == value, f"{name}: {var}"


def test_prefixes_match_settings_firehose_and_iam() -> None:
    defaults = Settings()
    template = load_template(MAIN)
    for name, container in _containers(template).items():
        for var, value in _env(container).items():
            if var.startswith("SHELFSTREAM_PREFIXES__"):
                member = var.removeprefix("SHELFSTREAM_PREFIXES__").lower()
                assert value == getattr(defaults.prefixes, member), f"{name}: {var}"
    resources = template["Resources"]
    archive = resources["ArchiveFirehose"]["Properties"]["IcebergDestinationConfiguration"]["S3Configuration"]
    windows = resources["WindowsFirehose"]["Properties"]["IcebergDestinationConfiguration"]["S3Configuration"]
    alerts = resources["AlertsFirehose"]["Properties"]["IcebergDestinationConfiguration"]["S3Configuration"]
    assert archive["Prefix"].startswith(defaults.prefixes.events)
    assert windows["Prefix"].startswith(defaults.prefixes.windows)
    assert alerts["Prefix"].startswith(defaults.prefixes.alerts)
    text = MAIN.read_text(encoding="utf-8")
    for prefix in (defaults.prefixes.checkpoints, defaults.prefixes.rejected, defaults.prefixes.reports):
        assert f"${{ArchiveBucket.Arn}}/{prefix}*" in text


def _glue_type(annotation: Any) -> str:
    """The Iceberg column type a field's JSON value lands in: scalars as themselves, times as
    timestamptz, anything nested (lists, maps, structs) as its JSON text in a string column."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return _glue_type(type(args[0]))
    if origin in (typing.Union, types.UnionType):
        kinds = {_glue_type(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else "string"  # mixed scalars: their text
    if origin in (tuple, list, dict) or (
        isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)
    ):
        return "string"
    return {str: "string", int: "long", float: "double", dt.datetime: "timestamptz"}[annotation]


def _iceberg(table_logical_id: str) -> dict[str, Any]:
    props = load_template(MAIN)["Resources"][table_logical_id]["Properties"]
    iceberg = props["OpenTableFormatInput"]["IcebergInput"]
    assert iceberg["MetadataOperation"] == "CREATE"
    assert iceberg["Version"] == "2"
    return dict(iceberg["IcebergTableInput"])


def _columns(table_logical_id: str) -> dict[str, str]:
    return {f["Name"]: f["Type"] for f in _iceberg(table_logical_id)["Schema"]["Fields"]}


# a string field of the contract that the tables keep as a time (RFC 3339 UTC, parsed on the way in)
_TIMES = {"ts", "expected_stockout_at", "window_start", "window_end"}


def _assert_columns_cover(
    columns: dict[str, str], structs: tuple[Any, ...], besides: frozenset[str] = frozenset()
) -> None:
    for struct in structs:
        for field in msgspec.structs.fields(struct):
            if field.name in besides:
                continue
            want = _glue_type(field.type)
            if field.name in _TIMES and want == "string":
                want = "timestamptz"
            assert columns.get(field.name) == want, f"{struct.__name__}.{field.name}"


def test_events_table_has_a_column_for_every_contract_field() -> None:
    columns = _columns("EventsTable")
    assert columns["type"] == "string"
    assert columns["ts"] == "timestamptz"
    _assert_columns_cover(columns, typing.get_args(contract.Event))
    # feedback events (in flight elsewhere) have their columns already
    assert {"alert_id", "window_start", "window_end", "verdict", "note", "by"} <= set(columns)


def test_alerts_table_has_a_column_for_every_alert_and_request_field() -> None:
    columns = _columns("AlertsTable")
    assert columns["kind"] == "string"
    _assert_columns_cover(columns, (*typing.get_args(contract.Alert), contract.RestockRequest))
    assert columns["withdrawn_alert_id"] == "string"  # anomaly_withdrawn


def test_windows_table_matches_the_processors_window_record() -> None:
    from processors.core.monitor import WindowRecord

    columns = _columns("WindowsTable")
    # `partial` marks windows after a backtest input's end: never archived by the live processor
    # (which has no end), so the table keeps it, if ever, in `extra`.
    _assert_columns_cover(columns, (WindowRecord,), besides=frozenset({"partial"}))
    assert set(columns) - {f.name for f in msgspec.structs.fields(WindowRecord)} == {"extra", "dt"}


def test_glue_type_mapping() -> None:
    assert _glue_type(tuple[float, float]) == "string"
    assert _glue_type(dict[str, tuple[str | float | None, str | float | None]]) == "string"
    assert _glue_type(typing.Annotated[int, msgspec.Meta(ge=1)] | None) == "long"


def test_the_stacks_iceberg_tables_are_the_local_tables() -> None:
    """One schema: the Glue tables are history/tables.py's (what pyiceberg creates locally), format v2,
    identity partition on their date column, written sorted by store."""
    from history.glue_tables import ICEBERG_TYPES, RESOURCE
    from history.tables import TABLES

    for name, table in TABLES.items():
        iceberg = _iceberg(RESOURCE[name])
        fields = iceberg["Schema"]["Fields"]
        assert [(f["Name"], f["Type"]) for f in fields] == [(c, ICEBERG_TYPES[k]) for c, k in table.columns]
        assert [f["Id"] for f in fields] == list(range(1, len(fields) + 1))
        ids = {f["Name"]: f["Id"] for f in fields}
        (part,) = iceberg["PartitionSpec"]["Fields"]
        assert part["Transform"] == "identity"
        assert part["SourceId"] == ids[table.partition]
        assert dict(fields[ids[table.partition] - 1])["Type"] == "date"
        (order,) = iceberg["WriteOrder"]["Fields"]
        assert order["SourceId"] == ids[table.sort]
        assert iceberg["Location"] == {"Fn::Sub": f"s3://${{ArchiveBucket}}/tables/{name}"}


def test_firehose_appends_to_the_iceberg_tables_by_date() -> None:
    resources = load_template(MAIN)["Resources"]
    streams = (
        ("ArchiveFirehose", "EventsTable", "events/"),
        ("WindowsFirehose", "WindowsTable", "windows/"),
        ("AlertsFirehose", "AlertsTable", "alerts/"),
    )
    for logical_id, table, prefix in streams:
        dest = resources[logical_id]["Properties"]["IcebergDestinationConfiguration"]
        assert dest["AppendOnly"] is True
        assert dest["CatalogConfiguration"]["CatalogArn"] == {
            "Fn::Sub": "arn:${AWS::Partition}:glue:${AWS::Region}:${AWS::AccountId}:catalog"
        }
        (target,) = dest["DestinationTableConfigurationList"]
        assert target["DestinationTableName"] == {"Ref": table}
        assert target["DestinationDatabaseName"] == {"Ref": "GlueDatabase"}
        assert target["PartitionSpec"] == {"Identity": [{"SourceName": "dt"}]}
        assert target["S3ErrorOutputPrefix"].startswith("firehose-errors/")
        assert "UniqueKeys" not in target  # append-only: no equality deletes
        assert dest["TableCreationConfiguration"]["Enabled"] is False  # the stack made them (v2)
        processors = {p["Type"]: p for p in dest["ProcessingConfiguration"]["Processors"]}
        # Packed records (several JSON lines per Firehose record) are split before they become rows.
        assert next(iter(processors)) == "RecordDeAggregation"
        assert processors["RecordDeAggregation"]["Parameters"][0]["ParameterValue"] == "JSON"
        # the JSON lines too (the dashboard tails them; `history convert` rebuilds a table from them)
        assert dest["s3BackupMode"] == "AllData"
        assert dest["S3Configuration"]["Prefix"].startswith(prefix)


def test_athena_has_kpi_queries_and_table_maintenance() -> None:
    resources = load_template(MAIN)["Resources"]
    queries = {
        v["Properties"]["Name"]: v["Properties"]["QueryString"]
        for v in resources.values()
        if v["Type"] == "AWS::Athena::NamedQuery"
    }
    assert "FROM kpis_store_daily" in queries["daily-kpis-per-store"]
    assert "at_timezone" in queries["kpi-sales-from-events"]  # the store's local day, from events
    assert "REWRITE DATA USING BIN_PACK" in queries["optimize-events"]
    assert "VACUUM events" in queries["vacuum-events"]
    history = _containers(load_template(MAIN))["HistoryTaskDefinition/history"]
    assert history["Command"] == ["history", "daily"]
    assert _env(history)["SHELFSTREAM_HISTORY__TABLES_CATALOG"] == "glue"


def _properties(path: Path) -> dict[str, str]:
    result = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and line[0] not in "#!":
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


def test_kcl_properties_name_the_shelfstream_cli_as_record_processor() -> None:
    import tomllib

    props = _properties(KCL_PROPERTIES)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    executable, subcommand = props["executableName"].split()
    assert scripts[executable] == "shelfstream.cli:main"
    assert subcommand == "kcl-processor"
    defaults = Settings()
    assert props["streamName"] == defaults.aws.stream_name
    assert props["regionName"] == defaults.aws.region
    assert props["initialPositionInStream"] == "TRIM_HORIZON"
    assert props["retrievalMode"] == "POLLING"


def test_processor_runs_the_kcl_image_and_its_role_fits_the_kcl_application() -> None:
    template = load_template(MAIN)
    container = _containers(template)["ProcessorTaskDefinition/processor"]
    assert "${KclRepositoryName}" in container["Image"]["Fn::Sub"]
    app_name = _env(container)["KCL_APPLICATION_NAME"]["Fn::Sub"]
    assert app_name == "${AWS::StackName}-processor"
    statements = template["Resources"]["ProcessorTaskRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in statements["Statement"]}
    tables = {
        r["Fn::Sub"].rsplit(":table/", 1)[1] for r in by_sid["KclLeaseWorkerAndCoordinatorTables"]["Resource"]
    }
    assert tables == {
        app_name,
        f"{app_name}/index/*",
        f"{app_name}-WorkerMetricStats",
        f"{app_name}-CoordinatorState",
    }
    namespace = by_sid["KclMetricsInItsOwnNamespace"]["Condition"]["StringEquals"]["cloudwatch:namespace"]
    assert namespace == {"Fn::Sub": app_name}


def test_services_commands_and_counts() -> None:
    template = load_template(MAIN)
    containers = _containers(template)
    assert containers["DispatcherTaskDefinition/dispatcher"]["Command"] == ["dispatch"]
    assert containers["ReportTaskDefinition/report"]["Command"] == ["report"]
    assert containers["ProducerTaskDefinition/producer"]["Command"][0] == "simulate"
    assert containers["IngestTaskDefinition/ingest"]["Command"] == ["ingest", "--watch"]
    assert containers["WarmStartTaskDefinition/warm-start"]["Command"] == ["warm-start"]
    assert template["Parameters"]["ProducerCount"]["Default"] == 0
    assert template["Parameters"]["IngestCount"]["Default"] == 0
    for name, container in containers.items():
        assert container["User"] == "10001:10001", name
        assert container["LogConfiguration"]["LogDriver"] == "awslogs", name
    services = {k: v for k, v in template["Resources"].items() if v["Type"] == "AWS::ECS::Service"}
    assert {s["Properties"]["TaskDefinition"]["Ref"] for s in services.values()} == {
        "ProcessorTaskDefinition",
        "DispatcherTaskDefinition",
        "ProducerTaskDefinition",
        "IngestTaskDefinition",
    }


def test_log_groups_keep_logs_for_a_set_time() -> None:
    resources = load_template(MAIN)["Resources"]
    groups = {k: v for k, v in resources.items() if v["Type"] == "AWS::Logs::LogGroup"}
    assert len(groups) == 8
    for name, group in groups.items():
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}, name


def test_weekly_report_is_an_eventbridge_scheduler_ecs_task() -> None:
    resources = load_template(MAIN)["Resources"]
    schedule = resources["WeeklyReportSchedule"]["Properties"]
    assert schedule["Target"]["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "ReportTaskDefinition"}
    assert schedule["Target"]["Arn"] == {"Fn::GetAtt": ["Cluster", "Arn"]}
    run_task = resources["SchedulerRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert run_task["Action"] == "ecs:RunTask"
    assert run_task["Resource"] == [{"Ref": "ReportTaskDefinition"}, {"Ref": "HistoryTaskDefinition"}]
    daily = resources["DailyHistorySchedule"]["Properties"]
    assert daily["Target"]["EcsParameters"]["TaskDefinitionArn"] == {"Ref": "HistoryTaskDefinition"}


def _alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_alarms_watch_lag_dead_letters_and_backlog_and_notify_the_alerts_topic() -> None:
    alarms = _alarms(load_template(MAIN))
    wanted = {
        ("GetRecords.IteratorAgeMilliseconds", "EventStream"),
        ("ApproximateNumberOfMessagesVisible", "RestockDeadLetterQueue"),
        ("ApproximateAgeOfOldestMessage", "RestockQueue"),
    }
    notified = set()
    for alarm in alarms.values():
        if alarm.get("AlarmActions") == [{"Ref": "AlertsTopic"}] and "Dimensions" in alarm:
            target = _references(alarm["Dimensions"][0]["Value"]).pop()
            notified.add((alarm["MetricName"], target))
    assert wanted <= notified


def test_a_quiet_stream_is_one_alarm_against_the_learned_band_of_its_records() -> None:
    alarm = _alarms(load_template(MAIN))["StreamQuietAlarm"]
    assert alarm["AlarmActions"] == [{"Ref": "AlertsTopic"}]
    assert alarm["ComparisonOperator"] == "LessThanLowerThreshold"
    assert alarm["TreatMissingData"] == "breaching"  # no records at all is no data point at all
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    stat = metrics["incoming"]["MetricStat"]
    assert stat["Metric"]["MetricName"] == "IncomingRecords"
    assert stat["Metric"]["Dimensions"][0]["Value"] == {"Ref": "EventStream"}
    assert metrics[alarm["ThresholdMetricId"]]["Expression"] == "ANOMALY_DETECTION_BAND(incoming, 3)"


def test_processor_scales_on_cpu_and_on_stream_lag() -> None:
    template = load_template(MAIN)
    resources = template["Resources"]
    cpu = resources["ProcessorCpuScaling"]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
    assert cpu["PredefinedMetricSpecification"]["PredefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    lag_alarms = [
        a for a in _alarms(template).values() if a.get("AlarmActions") == [{"Ref": "ProcessorLagScaleOut"}]
    ]
    assert [a["MetricName"] for a in lag_alarms] == ["GetRecords.IteratorAgeMilliseconds"]
    assert resources["ProcessorLagScaleOut"]["Properties"]["PolicyType"] == "StepScaling"


def test_data_is_encrypted_and_the_bucket_is_private_and_tls_only() -> None:
    resources = load_template(MAIN)["Resources"]
    assert resources["EventStream"]["Properties"]["StreamEncryption"]["EncryptionType"] == "KMS"
    bucket = resources["ArchiveBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert len(bucket["PublicAccessBlockConfiguration"]) == 4
    assert bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    deny = resources["ArchiveBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    for queue in ("RestockQueue", "RestockDeadLetterQueue", "AlertsInboxQueue"):
        assert resources[queue]["Properties"]["SqsManagedSseEnabled"] is True
    assert resources["AlertsTopic"]["Properties"]["KmsMasterKeyId"] == {"Ref": "Key"}
    redrive = resources["RestockQueue"]["Properties"]["RedrivePolicy"]
    assert redrive["deadLetterTargetArn"] == {"Fn::GetAtt": ["RestockDeadLetterQueue", "Arn"]}
    rules = {r["Id"]: r for r in bucket["LifecycleConfiguration"]["Rules"]}
    for prefix in ("events/", "windows/", "raw/", "rejected/"):
        assert any(r.get("Prefix") == prefix and "ExpirationInDays" in r for r in rules.values()), prefix


def test_restock_visibility_matches_the_queue_and_the_incoming_queue_gets_uploads() -> None:
    template = load_template(MAIN)
    resources = template["Resources"]
    visibility = resources["RestockQueue"]["Properties"]["VisibilityTimeout"]
    for name, container in _containers(template).items():
        assert _env(container)["SHELFSTREAM_TRUCKS__VISIBILITY_S"] == str(visibility), name
    bucket = resources["ArchiveBucket"]
    (notification,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notification["Queue"] == {"Fn::GetAtt": ["IncomingQueue", "Arn"]}
    assert notification["Filter"]["S3Key"]["Rules"] == [
        {"Name": "prefix", "Value": Settings().prefixes.incoming}
    ]
    assert bucket["DependsOn"] == "IncomingQueuePolicy"
    allow = resources["IncomingQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    bucket_arn = allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert bucket_arn.endswith(":::" + bucket["Properties"]["BucketName"]["Fn::Sub"])


def _resource_name(resource: Any) -> str:
    """A policy resource as written: the logical id of a Ref, `Id.Attr` of a GetAtt, the Sub text."""
    if isinstance(resource, str):
        return resource
    if "Ref" in resource:
        return str(resource["Ref"])
    if "Fn::GetAtt" in resource:
        return ".".join(resource["Fn::GetAtt"])
    sub = resource["Fn::Sub"]
    return str(sub if isinstance(sub, str) else sub[0])


def _grants(template: dict[str, Any], role: str) -> set[tuple[str, str]]:
    """(action, resource) pairs a role is allowed: its inline policies and the managed ones attached to it."""
    resources = template["Resources"]
    docs = [p["PolicyDocument"] for p in resources[role]["Properties"].get("Policies", [])]
    docs += [
        r["Properties"]["PolicyDocument"]
        for r in resources.values()
        if r["Type"] == "AWS::IAM::ManagedPolicy" and {"Ref": role} in r["Properties"].get("Roles", [])
    ]
    return {
        (action, _resource_name(res))
        for doc in docs
        for statement in doc["Statement"]
        if statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"])
        for res in _as_list(statement["Resource"])
    }


def test_each_task_role_allows_what_its_command_calls() -> None:
    template = load_template(MAIN)
    needs = {
        "ReportTaskRole": {
            ("s3:ListBucket", "ArchiveBucket.Arn"),
            ("s3:GetObject", "${ArchiveBucket.Arn}/events/*"),
            ("s3:GetObject", "${ArchiveBucket.Arn}/windows/*"),
            ("s3:GetObject", "${ArchiveBucket.Arn}/alerts/*"),
            ("s3:PutObject", "${ArchiveBucket.Arn}/reports/*"),
            ("sns:Publish", "AlertsTopic"),
            ("kms:GenerateDataKey", "Key.Arn"),
        },
        "HistoryTaskRole": {
            ("s3:ListBucket", "ArchiveBucket.Arn"),
            ("s3:GetObject", "${ArchiveBucket.Arn}/rejected/*"),
            ("s3:PutObject", "${ArchiveBucket.Arn}/tables/*"),
            ("s3:DeleteObject", "${ArchiveBucket.Arn}/tables/*"),
        },
        "IngestTaskRole": {
            ("sqs:GetQueueUrl", "IncomingQueue.Arn"),
            ("sqs:ReceiveMessage", "IncomingQueue.Arn"),
            ("sqs:DeleteMessage", "IncomingQueue.Arn"),
            ("s3:GetObject", "${ArchiveBucket.Arn}/incoming/*"),
            ("s3:PutObject", "${ArchiveBucket.Arn}/rejected/*"),
            ("kinesis:PutRecords", "EventStream.Arn"),
        },
        "ProcessorTaskRole": {
            *(
                ("firehose:PutRecordBatch", f"{f}.Arn")
                for f in ("ArchiveFirehose", "WindowsFirehose", "AlertsFirehose")
            ),
            ("sqs:SendMessage", "RestockQueue.Arn"),
            ("sns:Publish", "AlertsTopic"),
            *((f"dynamodb:{a}", "ShardClocksTable.Arn") for a in ("PutItem", "Query", "DeleteItem")),
        },
        "DispatcherTaskRole": {
            ("sqs:ReceiveMessage", "RestockQueue.Arn"),
            ("kinesis:PutRecords", "EventStream.Arn"),
            ("dynamodb:PutItem", "DeliveriesTable.Arn"),
        },
    }
    for role, wanted in needs.items():
        missing = wanted - _grants(template, role)
        assert not missing, f"{role} lacks {sorted(missing)}"


def test_put_metric_data_only_for_the_kcl_and_only_in_its_namespace() -> None:
    """The app's own metrics are EMF lines in its logs (no API call); only the KCL daemon calls
    PutMetricData, and only into the namespace named after its application."""
    template = load_template(MAIN)
    found = []
    for name, resource in template["Resources"].items():
        if resource["Type"] != "AWS::IAM::Role":
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if "cloudwatch:PutMetricData" in _as_list(statement["Action"]):
                    found.append(name)
                    namespace = statement["Condition"]["StringEquals"]["cloudwatch:namespace"]
                    assert namespace == {"Fn::Sub": "${AWS::StackName}-processor"}
    assert found == ["ProcessorTaskRole"]
    kcl_env = _env(_containers(template)["ProcessorTaskDefinition/processor"])
    assert kcl_env["KCL_APPLICATION_NAME"] == {"Fn::Sub": "${AWS::StackName}-processor"}


def test_dashboard_charts_the_dispatchers_and_record_processors_emf_metrics() -> None:
    """The EMF lines of the dispatcher and of the KCL record processors (foundation.metrics) become
    metrics in the `shelfstream` namespace, dimensions Service and Stream; the dashboard must name them
    exactly so, or its chart stays empty."""
    from foundation.metrics import METRICS, NAMESPACE

    body = load_template(MAIN)["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    emf = [
        line
        for w in widgets
        if w["type"] == "metric"
        for line in w["properties"]["metrics"]
        if line[0] == NAMESPACE
    ]
    by_service = {(line[3], line[1]) for line in emf}
    assert by_service == {
        *(("dispatch", m) for m in ("Deliveries", "PutRetries", "Throttles", "DeadLettered")),
        *(("processor", m) for m in ("QuietShards", "LateEvents", "EventsRejected")),
    }
    for line in emf:
        assert line[1] in METRICS
        assert line[2] == "Service"
        assert line[4:6] == ["Stream", "x"]
        assert line[6:] in ([], [{"yAxis": "right"}])
    assert '"Stream", "${EventStream}"' in body
