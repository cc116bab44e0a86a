"""Real PostgreSQL for tests: an existing server (TEST_DATABASE_URL) or a throwaway cluster.

A throwaway cluster is made with initdb/pg_ctl in a temp dir (as the ``postgres`` OS user when
the tests run as root, since initdb refuses root). Fault-injection tests always use a throwaway
cluster, because they stop and start it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from orchestrator.models import Base


def postgres_bindir() -> Path | None:
    """Directory holding initdb and pg_ctl, or None."""
    for candidate in [shutil.which("pg_ctl"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)]:
        if candidate and Path(candidate).exists():
            return Path(candidate).resolve().parent
    return None


def _run_as() -> list[str]:
    """Command prefix to run the cluster as a non-root user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return []
    runuser = shutil.which("runuser")
    return [runuser, "-u", "postgres", "--"] if runuser else []


class PostgresCluster:
    """initdb + pg_ctl in a temp dir, listening on 127.0.0.1:<port>, trust auth."""

    def __init__(self, bindir: Path, port: int) -> None:
        self.bindir = bindir
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="pedi-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.prefix = _run_as()
        if self.prefix:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *argv: str, timeout: float = 60) -> None:
        subprocess.run([*self.prefix, *argv], check=True, capture_output=True, timeout=timeout)

    def init(self) -> None:
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def normalize(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://", 1) if url.startswith("postgresql://") else url


def can_connect(url: str, timeout: float = 3.0) -> bool:
    engine = create_engine(normalize(url), connect_args={"connect_timeout": int(timeout)})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def create_database(server_url: str, prefix: str = "pedi_test") -> str:
    """Create a uniquely named database on the server of ``server_url``; return its URL."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(normalize(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(normalize(server_url)).set(database=name).render_as_string(hide_password=False)


def drop_database(database_url: str) -> None:
    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": url.database},
        )
        connection.execute(text(f'DROP DATABASE IF EXISTS "{url.database}"'))
    admin.dispose()


def truncate_all(database_url: str) -> None:
    """Empty every table. The audit table refuses TRUNCATE, except with triggers off for this
    transaction (session_replication_role: the test role is a superuser; an app role is not)."""
    engine = create_engine(database_url)
    names = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text("SET LOCAL session_replication_role = replica"))
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if can_connect(url, timeout=1.0):
            return
        time.sleep(0.2)
    raise RuntimeError("postgres did not come up")


# --- least-privilege roles (migrations/roles.sql) ---------------------------------------------


def libpq_url(url: str) -> str:
    """``url`` as psql and libpq take it (no SQLAlchemy driver suffix)."""
    return make_url(normalize(url)).set(drivername="postgresql").render_as_string(hide_password=False)


def as_role(database_url: str, role: str, password: str) -> str:
    """The URL of the same database, logged in as ``role``."""
    return make_url(normalize(database_url)).set(username=role, password=password).render_as_string(hide_password=False)


def unique_role_names(label: str = "") -> tuple[str, str]:
    """(owner, app) role names for one test session: roles are cluster-wide, databases are not."""
    suffix = f"{label}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    return f"pedi_owner_{suffix}", f"pedi_app_{suffix}"


def apply_roles_sql(database_url: str, owner: str, app: str, *, timeout: float = 60, **variables: str) -> str:
    """Run migrations/roles.sql with psql, as the (superuser) user of ``database_url``; return its
    output. Raises CalledProcessError (with psql's stderr) on failure."""
    from tests.support.env import ROOT

    argv = [shutil.which("psql") or "psql", libpq_url(database_url), "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in {"owner_role": owner, "app_role": app, **variables}.items():
        argv += ["-v", f"{name}={value}"]
    argv += ["-f", str(ROOT / "migrations" / "roles.sql")]
    done = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=timeout)
    return done.stdout


def drop_roles(server_url: str, *roles: str) -> None:
    """Drop ``roles`` (after the databases holding their objects and grants are dropped)."""
    admin = create_engine(normalize(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for role in roles:
            connection.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
    admin.dispose()
