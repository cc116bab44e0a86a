"""Fault-injection suite: real processes, real faults, and one summary line per test.

Every test records ``<name>: accepted=N terminal=N lost=0 duplicates=0`` (and any measured
figure, such as a detection time, as a note). The lines are printed as the test ends (visible with
``-s``) and again in a "fault-injection summary" section at the end of the run, so CI logs show
them whatever the capture mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.faults.ledger import Ledger, Outcome

SUMMARY_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SUMMARY_KEY] = []


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    lines = config.stash.get(SUMMARY_KEY, [])
    if not lines:
        return
    terminalreporter.section("fault-injection summary")
    for line in lines:
        terminalreporter.write_line(line)


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[Outcome | str], None]:
    """Record a result line (an Outcome) or a note (a string) for the summary, and print it."""
    lines = request.config.stash[SUMMARY_KEY]

    def record(item: Outcome | str) -> None:
        line = item.line() if isinstance(item, Outcome) else f"  note: {item}"
        lines.append(line)
        print(line, flush=True)

    return record


@pytest.fixture
def ledger(pg_url: str) -> Iterator[Ledger]:
    books = Ledger(pg_url)
    yield books
    books.close()
