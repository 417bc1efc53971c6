"""The stream processor: a pure core (processors.core) and the shell that feeds it from Kinesis."""
