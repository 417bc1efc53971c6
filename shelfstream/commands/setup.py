"""`local-aws` and `provision`: the AWS the app runs on."""

from __future__ import annotations

import argparse

from rich.table import Table

from shelfstream.bootstrap import bootstrap
from shelfstream.commands.common import out


def cmd_local_aws(args: argparse.Namespace) -> int:
    from foundation.aws.embedded import serve

    serve(args.port or None, bootstrap(aws=False).settings, announce=lambda text: print(text, flush=True))
    return 0


def cmd_provision(args: argparse.Namespace) -> int:
    from foundation.aws.provision import provision

    resources = provision(bootstrap().settings)
    table = Table("resource", "name / address", title="provisioned")
    for field, value in vars(resources).items():
        table.add_row(field, str(value))
    out().print(table)
    return 0
