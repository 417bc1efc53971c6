"""The same windowed job in other stream engines, each run as a whole process by benchmarks.peers.run."""
