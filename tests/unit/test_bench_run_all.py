"""`make bench`'s own bookkeeping: each section's time and status at the top, a failed section said."""

from __future__ import annotations

from benchmarks.run_all import Section, _module, section_table


def test_the_section_table_names_each_section_its_time_and_what_failed() -> None:
    rows = section_table([Section("Latency", 36.4), Section("The KCL", 180.0, "exit status 1: boom")], 216.4)
    assert rows[2] == "| Latency | 36 | ok |"
    assert rows[3] == "| The KCL | 180 | FAILED: exit status 1: boom |"
    assert rows[-1] == "| whole run | 216 | 1 failed |"


def test_a_failing_section_reports_its_status_and_last_error_line() -> None:
    output, seconds, code, last_error = _module("benchmarks.kcl", "--no-such-option")
    assert code == 2
    assert "unrecognized arguments: --no-such-option" in last_error
    assert seconds > 0
    assert output == ""
