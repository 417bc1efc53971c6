"""The HTTP API and live dashboard (`shelfstream serve`, docs/contract.md section 5).

The app reads one in-memory view (:class:`shelfstream.api.state.DashboardState`) that is fed by the
processor's own outputs: in the demo straight from the running processor and trucks, standalone from
the processor's checkpoints, the alerts topic and the archives. It never computes stock itself.
"""
