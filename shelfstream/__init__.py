"""shelfstream: real-time retail inventory and sales analytics on AWS Kinesis."""

__version__ = "0.1.0"
