"""What bench.e2e counts rather than estimates: CPU time of a process, Redis commands, Postgres
statements. Each probe takes a snapshot before and after a phase; the phase's figure is the
difference.

- CPU: user + system time of a process and of its waited-for children (a forking RQ worker's
  work horses), from /proc/<pid>/stat. Linux only.
- Redis: ``INFO commandstats`` of the bench's private redis-server: calls per command. A
  pipeline sends several commands in one round trip, and RQ's pipelines are MULTI/EXEC
  transactions, so the EXEC count is also given: it is how many of those round trips were
  pipelines. The probe's own INFO calls are left out.
- Postgres: ``pg_stat_statements`` of the bench's private cluster, summed over every statement
  run in the bench database. psycopg2 sends one statement per round trip, BEGIN, COMMIT and
  ROLLBACK included, so calls = round trips. Only top-level statements are tracked (the
  default): the foreign-key checks a trigger runs inside an INSERT are not round trips. BEGIN
  calls = explicit transactions. Left out: the probe's own queries (they read
  pg_stat_statements) and every statement of the observer role the bench polls and reads with.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from tests.support.postgres import PostgresCluster


def cpu_ms(pid: int) -> float:
    """User + system CPU of process ``pid`` and its reaped children, in ms."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")": state is fields[0], so utime, stime, cutime, cstime are fields[11:15]
    ticks = sum(int(value) for value in fields[11:15])
    return 1000.0 * ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RedisCount:
    commands: int
    execs: int
    by_command: dict[str, int] = field(default_factory=dict)

    def __sub__(self, other: RedisCount) -> RedisCount:
        names = self.by_command.keys() | other.by_command.keys()
        delta = {n: self.by_command.get(n, 0) - other.by_command.get(n, 0) for n in names}
        return RedisCount(
            self.commands - other.commands, self.execs - other.execs, {n: d for n, d in delta.items() if d}
        )

    def top(self, jobs: int, n: int = 8) -> str:
        """The ``n`` commands sent most, per job, for the progress lines."""
        ranked = sorted(self.by_command.items(), key=lambda item: -item[1])[:n]
        return ", ".join(f"{name} {count / jobs:.1f}" for name, count in ranked)


class RedisProbe:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> RedisCount:
        stats = self.client.info("commandstats")
        calls = {name.removeprefix("cmdstat_"): int(entry["calls"]) for name, entry in stats.items()}
        calls.pop("info", None)  # only the probe sends INFO
        return RedisCount(sum(calls.values()), calls.get("exec", 0), calls)

    def close(self) -> None:
        self.client.close()


@dataclass(frozen=True)
class PgCount:
    statements: int
    transactions: int
    by_query: dict[str, int] = field(default_factory=dict)

    def __sub__(self, other: PgCount) -> PgCount:
        delta = {q: n - other.by_query.get(q, 0) for q, n in self.by_query.items()}
        return PgCount(
            self.statements - other.statements,
            self.transactions - other.transactions,
            {q: d for q, d in delta.items() if d},
        )

    def top(self, jobs: int, n: int = 6, width: int = 70) -> str:
        ranked = sorted(self.by_query.items(), key=lambda item: -item[1])[:n]
        return "; ".join(f"{count / jobs:.1f} × {' '.join(query.split())[:width]}" for query, count in ranked)


SNAPSHOT = text(
    "SELECT s.query, sum(s.calls) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
    "WHERE d.datname = current_database() AND s.query NOT LIKE '%pg_stat_statements%' "
    "AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = :observer) GROUP BY s.query"
)


class PgProbe:
    """Needs ``shared_preload_libraries = pg_stat_statements`` on the server; creates the
    extension in the database of ``url`` (a superuser's URL: it reads every role's statements)."""

    def __init__(self, url: str, observer: str) -> None:
        self.observer = observer
        self.engine: Engine = create_engine(url, isolation_level="AUTOCOMMIT", pool_size=1)
        with self.engine.connect() as connection:
            connection.execute(text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))

    def snapshot(self) -> PgCount:
        with self.engine.connect() as connection:
            rows = connection.execute(SNAPSHOT, {"observer": self.observer}).all()
        by_query = {query: int(calls) for query, calls in rows}
        begins = sum(n for query, n in by_query.items() if query.strip().upper().startswith("BEGIN"))
        return PgCount(sum(by_query.values()), begins, by_query)

    def close(self) -> None:
        self.engine.dispose()


@dataclass
class Counted:
    """Round trips and CPU of one phase, per job."""

    jobs: int
    redis: RedisCount
    pg: PgCount | None = None
    cpu_ms: float | None = None

    def per_job(self, value: float) -> float:
        return value / self.jobs


class Probes:
    """Both counters; ``start`` then ``stop`` around a phase."""

    def __init__(self, redis_url: str, pg_url: str | None, observer: str = "") -> None:
        self.redis = RedisProbe(redis_url)
        self.pg = PgProbe(pg_url, observer) if pg_url else None
        self._before: tuple[RedisCount, PgCount | None] | None = None

    def start(self) -> None:
        self._before = (self.redis.snapshot(), self.pg.snapshot() if self.pg else None)

    def stop(self, jobs: int, cpu: float | None = None) -> Counted:
        assert self._before is not None, "start() first"
        redis_before, pg_before = self._before
        pg = self.pg.snapshot() - pg_before if self.pg and pg_before else None
        return Counted(jobs, self.redis.snapshot() - redis_before, pg, cpu)

    def close(self) -> None:
        self.redis.close()
        if self.pg:
            self.pg.close()


class StatsCluster(PostgresCluster):
    """A throwaway cluster that loads pg_stat_statements."""

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300 "
            "-c shared_preload_libraries=pg_stat_statements"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
