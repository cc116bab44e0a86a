"""Fault-injection suite: real processes, real faults, and one summary line per test.

Every test records ``<name>: accepted=N terminal=N lost=0 duplicates=0`` (and any measured
figure, such as a detection time, as a note). The lines are printed as the test ends (visible with
``-s``) and again in a "fault-injection summary" section at the end of the run, so CI logs show
them whatever the capture mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import migrate
from tests.faults.ledger import Ledger, Outcome
from tests.support import postgres
from tests.support.env import free_port, require
from tests.support.stack import Stack

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


@pytest.fixture
def cluster() -> Iterator[postgres.PostgresCluster]:
    """A throwaway Postgres cluster of the test's own, which it may stop, SIGSTOP or restart."""
    bindir = postgres.postgres_bindir()
    require(bindir, "initdb/pg_ctl not found (install postgresql)")
    throwaway = postgres.PostgresCluster(bindir, free_port())
    try:
        throwaway.init()
        throwaway.start()
        yield throwaway
    finally:
        throwaway.destroy()


@pytest.fixture
def own_stack(cluster, redis_url, artifacts) -> Iterator[tuple[Stack, str]]:
    """A stack on a migrated database in ``cluster``, and that database's URL."""
    url = postgres.create_database(cluster.url())
    migrate(url)
    built = Stack(url, redis_url, artifacts)
    yield built, url
    built.close()
