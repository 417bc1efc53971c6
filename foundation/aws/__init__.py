"""AWS wiring: clients from the SDK's own settings, provisioning, Kinesis shard lineage and the
embedded AWS."""
