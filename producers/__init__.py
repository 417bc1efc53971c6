"""Producers: everything that puts events on the Kinesis stream (simulated stores, file replay)."""

from producers.kinesis_writer import DeadLetterFile, KinesisWriter, OutRecord, WriterStats
from producers.ledger import Ledger
from producers.replay import ReplayStats, SimulationStats, replay_file, run_simulation
from producers.simulator import SimEvent, SimulatorStats, StoreSimulator

__all__ = [
    "DeadLetterFile",
    "KinesisWriter",
    "Ledger",
    "OutRecord",
    "ReplayStats",
    "SimEvent",
    "SimulationStats",
    "SimulatorStats",
    "StoreSimulator",
    "WriterStats",
    "replay_file",
    "run_simulation",
]
