"""Benchmarks kept in the repo and run by a command (`make bench-detect`, `make bench-core`), not as
timed tests."""
