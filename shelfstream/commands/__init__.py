"""The command handlers (`cmd_*`), grouped by what they do; `shelfstream.cli` maps names to them.

- `setup`: the embedded AWS and provisioning
- `run`: the long-running services (processor, dispatcher, KCL record processor, API, demo)
- `produce`: what puts events into the stream (simulate, replay, ingest, loadtest)
- `read`: what reads the loop's state (inventory, alerts, backtest)
- `reports`: SQL over the archive and the weekly report
"""
