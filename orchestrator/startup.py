"""The start of a command-line process (the reconciler, the retention pass, the worker): its
validated settings and JSON logs, or one line naming what is wrong and exit status 2."""

from __future__ import annotations

import sys

import click

from orchestrator.errors import ConfigError
from orchestrator.logs import configure_logging
from orchestrator.settings import Settings, get_settings

CONFIG_ERROR_EXIT_STATUS = 2
"""A process refused to start on its configuration (a supervisor should not just restart it)."""


def refuse(program: str, error: ConfigError) -> None:
    """Print ``<program>: <what is wrong>`` on stderr and exit with CONFIG_ERROR_EXIT_STATUS."""
    click.echo(f"{program}: {error.message}", err=True)
    sys.exit(CONFIG_ERROR_EXIT_STATUS)


def start_command(program: str) -> Settings:
    """The validated settings, with JSON logs on stdout at LOG_LEVEL; refuses to start otherwise."""
    try:
        settings = get_settings()
    except ConfigError as exc:
        refuse(program, exc)
    configure_logging(settings.log_level)
    return settings
