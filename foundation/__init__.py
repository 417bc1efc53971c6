"""The foundation every part of shelfstream stands on: the event contract, errors, clock, retry, logs,
metrics and the AWS wiring (clients, provisioning, the embedded AWS). It imports nothing above it."""
