"""A second Kinesis implementation for the tests: kinesis-local (kinesis-mock, the engine inside
LocalStack), which closes shards and reports child shards faithfully on resharding.

`make test` installs it with npm into .cache/kinesis-local; shelfstream/kcl_local.py starts it on
127.0.0.1 (the local KCL worker uses it too).
"""

from __future__ import annotations

from shelfstream.kcl_local import KINESIS_LOCAL_PACKAGE as PACKAGE
from shelfstream.kcl_local import kinesis_local

__all__ = ["PACKAGE", "kinesis_local"]
