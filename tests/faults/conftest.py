"""The fault tally: every test in tests/faults/ is one fault; at the end the suite prints how many were tried,
how many held (the promise kept) and which did not."""

from __future__ import annotations

_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report) -> None:
    if "tests/faults/" not in report.nodeid.replace("\\", "/"):
        return
    if report.when == "call" or report.outcome != "passed":
        previous = _outcomes.get(report.nodeid)
        if previous not in ("failed", "error"):
            _outcomes[report.nodeid] = ("error" if report.when != "call" and report.failed else report.outcome)


def pytest_terminal_summary(terminalreporter) -> None:
    if not _outcomes:
        return
    held = [n for n, o in _outcomes.items() if o == "passed"]
    failed = [n for n, o in _outcomes.items() if o in ("failed", "error")]
    skipped = [n for n, o in _outcomes.items() if o == "skipped"]
    terminalreporter.section("fault tally")
    terminalreporter.write_line(f"faults tried: {len(_outcomes)}, held: {len(held)}, failed: {len(failed)}"
                                + (f", skipped: {len(skipped)}" if skipped else ""))
    for name in failed:
        terminalreporter.write_line(f"  not held: {name.split('::', 1)[-1]}")
