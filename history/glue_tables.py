"""The CloudFormation of the history tables as Glue Data Catalog Iceberg tables, from history/tables.py
(one source for the schemas: the template's tables are checked against it in the tests).

    python -m history.glue_tables > /tmp/tables.yaml   # then into deploy/cloudformation/shelfstream.yaml
"""

from __future__ import annotations

from history.tables import TABLES, TableDef

ICEBERG_TYPES = {
    "string": "string",
    "json": "string",
    "long": "long",
    "double": "double",
    "timestamptz": "timestamptz",
    "date": "date",
}
RESOURCE = {
    "events": "EventsTable",
    "windows": "WindowsTable",
    "alerts": "AlertsTable",
    "rejected": "RejectedTable",
    "kpis_daily": "KpisDailyTable",
    "kpis_store_daily": "KpisStoreDailyTable",
}
DESCRIPTION = {
    "events": "Every valid event (docs/contract.md section 1), Iceberg v2, partitioned by dt (UTC date "
    "of ts).",
    "windows": "Closed event-time windows per store (latest revision counts), partitioned by dt of "
    "window_start.",
    "alerts": "Every alert, restock request and stock note (docs/contract.md section 2), partitioned by "
    "dt of ts.",
    "rejected": "Records the processor or ingest refused, with the reason, partitioned by dt (when kept).",
    "kpis_daily": "Daily inventory KPIs per store, product and local day (docs/history.md), partitioned "
    "by day.",
    "kpis_store_daily": "Daily inventory KPIs per store and local day (docs/history.md), partitioned by day.",
}


def table_yaml(table: TableDef) -> str:
    ids = {name: i for i, (name, _) in enumerate(table.columns, start=1)}
    lines = [
        f"  {RESOURCE[table.name]}:",
        "    Type: AWS::Glue::Table",
        "    Properties:",
        "      CatalogId: !Ref AWS::AccountId",
        "      DatabaseName: !Ref GlueDatabase",
        "      TableInput:",
        f"        Name: {table.name}",
        f"        Description: {DESCRIPTION[table.name]}",
        "        TableType: EXTERNAL_TABLE",
        "      OpenTableFormatInput:",
        "        IcebergInput:",
        "          MetadataOperation: CREATE",
        '          Version: "2"',
        "          IcebergTableInput:",
        f'            Location: !Sub "s3://${{ArchiveBucket}}/tables/{table.name}"',
        "            Properties:",
        "              write.parquet.compression-codec: zstd",
        "            Schema:",
        "              Type: struct",
        "              Fields:",
    ]
    for name, kind in table.columns:
        field = f"{{Id: {ids[name]}, Name: {name}, Type: {ICEBERG_TYPES[kind]}, Required: false}}"
        lines.append(f"                - {field}")
    lines += [
        "            PartitionSpec:",
        "              SpecId: 0",
        "              Fields:",
        f"                - {{SourceId: {ids[table.partition]}, FieldId: 1000, Transform: identity, "
        f"Name: {table.partition}}}",
        "            WriteOrder:",
        "              OrderId: 1",
        "              Fields:",
        f"                - {{SourceId: {ids[table.sort]}, Transform: identity, Direction: asc, "
        "NullOrder: nulls-first}",
    ]
    return "\n".join(lines)


def main() -> None:
    print("\n\n".join(table_yaml(t) for t in TABLES.values()))


if __name__ == "__main__":
    main()
