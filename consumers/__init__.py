"""Consumers of the processor's output: the truck dispatch worker."""
