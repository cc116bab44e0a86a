"""Command line of the reference model server: ``python -m modelreasoner.server --tier edge --port 8001``.

Every option can also come from ``MODEL_SERVER_<OPTION>`` (docs/model-server.md).
"""

from __future__ import annotations

import logging
from typing import Any

import click
import uvicorn

from modelreasoner.server.app import SHUTDOWN_GRACE_S, EmulatedConnectionDrop, create_app
from modelreasoner.server.emulation import FAULTS, TIERS, profile_for_tier
from modelreasoner.server.screening import MODEL_VERSION

logger = logging.getLogger("modelreasoner.server")


class _HideEmulatedDrops(logging.Filter):
    """Keeps uvicorn from logging a traceback for every deliberate close_connection fault."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, EmulatedConnectionDrop)


def _env(name: str) -> str:
    return f"MODEL_SERVER_{name}"


@click.command(context_settings={"show_default": True})
@click.option("--host", default="127.0.0.1", envvar=_env("HOST"), help="Interface to bind.")
@click.option("--port", default=8001, type=int, envvar=_env("PORT"), help="TCP port.")
@click.option("--tier", default="none", type=click.Choice(TIERS), envvar=_env("TIER"), help="Default profile.")
@click.option("--latency-ms", type=float, envvar=_env("LATENCY_MS"), help="Median extra delay (ms).")
@click.option("--jitter", type=float, envvar=_env("JITTER"), help="Lognormal sigma of the delay.")
@click.option("--fail-rate", type=float, envvar=_env("FAIL_RATE"), help="Probability (0..1) of a 503.")
@click.option("--capacity", type=int, envvar=_env("CAPACITY"), help="Concurrent slots; excess requests queue.")
@click.option("--cost-usd", type=float, envvar=_env("COST_USD"), help="Reported cost per call (USD).")
@click.option("--seed", type=int, envvar=_env("SEED"), help="RNG seed for repeatable delays and failures.")
@click.option("--fault", type=click.Choice(FAULTS), envvar=_env("FAULT"), help="Deterministic fault mode.")
@click.option("--admin", is_flag=True, envvar=_env("ADMIN"), help="Enable POST /admin/profile.")
@click.option("--access-log", is_flag=True, envvar=_env("ACCESS_LOG"), help="Log one line per request.")
@click.option(
    "--log-level",
    default="warning",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    envvar=_env("LOG_LEVEL"),
)
def main(host: str, port: int, tier: str, admin: bool, access_log: bool, log_level: str, **options: Any) -> None:
    """Serve the reference screening model, emulating a tier's latency and failure profile."""
    try:
        profile = profile_for_tier(tier, **options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config = uvicorn.Config(
        create_app(profile, admin=admin),
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
    )
    logging.getLogger("uvicorn.error").addFilter(_HideEmulatedDrops())
    if access_log:  # uvicorn sets the access logger to --log-level, which would hide its INFO lines
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    logger.info("model server %s on %s:%d, profile %s, admin=%s", MODEL_VERSION, host, port, profile, admin)
    uvicorn.Server(config).run()
