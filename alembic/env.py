"""Alembic environment: migrates the database named by the project's settings (DATABASE_URL)."""

from __future__ import annotations

import sys
from logging.config import fileConfig

from sqlalchemy import create_engine, pool

from alembic import context
from orchestrator.errors import ConfigError
from orchestrator.models import Base
from orchestrator.settings import get_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name)

target_metadata = Base.metadata


def database_url() -> str:
    explicit = config.attributes.get("database_url")
    if explicit:
        return explicit
    try:
        return get_settings().database_url
    except ConfigError as exc:
        sys.exit(f"alembic: {exc.message}")


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
