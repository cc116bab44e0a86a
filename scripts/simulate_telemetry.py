"""Post realistic telemetry for every configured target to a running API.

    python scripts/simulate_telemetry.py --seconds 60 [--url http://localhost:9000]
        [--api-key KEY] [--interval 1.0] [--seed N]

Targets are read from GET /api/targets. Each interval, one sample per target is posted in a
single batch to POST /api/telemetry:

* latency: log-normal around the target's prior latency, with a spread by tier (edge boxes
  jitter, cloud endpoints have long tails, GPUs are tight), inflated when the target is busy;
* utilization: a mean-reverting random walk, so load drifts rather than jumps;
* queue depth: zero most of the time, with occasional build-ups that grow and then drain;
* up: now and then a target reports itself down for a few intervals;
* units are mixed on purpose (ms, s, "80ms", fractions, percents, "42%", epoch s, epoch ms,
  ISO-8601), which exercises the API's normalization.

Exits 0 when the run completes; with a clear message (no traceback) and a non-zero status when
the API is unreachable, refuses the key, or has no targets.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click
import httpx

REQUEST_TIMEOUT_SECONDS = 10.0
"""One API call may take this long (s) before the run gives up on it."""

TIER_SPREAD = {"edge": 0.35, "cloud": 0.55, "gpu": 0.2}
"""Log-space sigma of latency per tier: p95 is exp(1.645 * sigma) times the median."""
DEFAULT_SPREAD = 0.4

UTILIZATION_MEAN = {"edge": 0.55, "cloud": 0.3, "gpu": 0.6}
"""Where each tier's utilization drifts back to (0-1)."""
REVERSION = 0.15
"""Share of the gap to the mean closed each interval: load drifts, it does not jump."""
UTILIZATION_STEP = 0.06
"""Standard deviation of the random utilization step per interval."""

QUEUE_BURST_CHANCE = 0.04
"""Chance per interval and target that a queue starts to build up."""
OUTAGE_CHANCE = 0.01
"""Chance per interval and target that it reports itself down for a few intervals."""


@dataclass
class TargetState:
    """What the simulator remembers about one target between intervals."""

    name: str
    tier: str
    median_ms: float
    capacity: int
    cost_usd: float
    utilization: float
    queue: int = 0
    burst_left: int = 0
    down_left: int = 0
    history: list[str] = field(default_factory=list)


def initial_state(target: dict[str, Any], rng: random.Random) -> TargetState:
    tier = target.get("tier", "cloud")
    mean = UTILIZATION_MEAN.get(tier, 0.4)
    return TargetState(
        name=target["name"],
        tier=tier,
        median_ms=float(target.get("prior_latency_ms") or 200.0),
        capacity=int(target.get("capacity") or 8),
        cost_usd=float(target.get("cost_per_call_usd") or 0.0),
        utilization=min(max(rng.gauss(mean, 0.1), 0.02), 0.98),
    )


def step(state: TargetState, rng: random.Random) -> None:
    """Advance one interval: utilization drifts, queues build and drain, outages start and end."""
    mean = UTILIZATION_MEAN.get(state.tier, 0.4)
    drift = REVERSION * (mean - state.utilization) + rng.gauss(0.0, UTILIZATION_STEP)
    state.utilization = min(max(state.utilization + drift, 0.01), 1.0)
    if state.burst_left == 0 and rng.random() < QUEUE_BURST_CHANCE:
        state.burst_left = rng.randint(3, 10)
    if state.burst_left > 0:
        state.burst_left -= 1
        state.queue += rng.randint(1, max(2, state.capacity // 2))
        state.utilization = max(state.utilization, 0.9)
    else:
        state.queue = max(0, state.queue - rng.randint(1, max(2, state.capacity)))
    if state.down_left > 0:
        state.down_left -= 1
    elif rng.random() < OUTAGE_CHANCE:
        state.down_left = rng.randint(2, 5)


def latency_ms(state: TargetState, rng: random.Random) -> float:
    """One latency draw: log-normal around the median, slower when busy or queued."""
    sigma = TIER_SPREAD.get(state.tier, DEFAULT_SPREAD)
    busy = 1.0 + max(0.0, state.utilization - 0.7) * 3.0
    queued = 1.0 + state.queue / max(state.capacity, 1)
    return state.median_ms * math.exp(rng.gauss(0.0, sigma)) * busy * queued


def encode_latency(value_ms: float, rng: random.Random) -> dict[str, Any]:
    form = rng.randrange(4)
    if form == 0:
        return {"latency_ms": round(value_ms, 2)}
    if form == 1:
        return {"latency_s": round(value_ms / 1000.0, 5)}
    if form == 2:
        return {"latency": f"{value_ms:.1f}ms"}
    return {"latency": f"{value_ms / 1000.0:.4f}s"}


def encode_utilization(fraction: float, rng: random.Random) -> dict[str, Any]:
    form = rng.randrange(3)
    percent = round(fraction * 100.0, 1)
    # A bare number is a percent only above 1, so tiny loads always go as a fraction.
    if form == 1 and percent > 1.0:
        return {"utilization": percent}
    if form == 2:
        return {"utilization": f"{percent}%"}
    return {"utilization": round(fraction, 4)}


def encode_time(at: float, rng: random.Random) -> dict[str, Any]:
    form = rng.randrange(3)
    if form == 0:
        return {"timestamp": round(at, 3)}
    if form == 1:
        return {"timestamp": int(at * 1000)}
    return {"timestamp": datetime.fromtimestamp(at, UTC).isoformat()}


def sample(state: TargetState, rng: random.Random, now: float) -> dict[str, Any]:
    """The telemetry sample ``state`` reports at ``now`` (epoch s), in randomly mixed units."""
    body: dict[str, Any] = {"target": state.name, "source": "simulator", **encode_time(now, rng)}
    if state.down_left > 0:
        body["up"] = False
        return body
    body.update(encode_latency(latency_ms(state, rng), rng))
    body.update(encode_utilization(state.utilization, rng))
    body["queue_depth"] = state.queue
    body["cost_usd"] = state.cost_usd
    body["up"] = True
    return body


def describe(state: TargetState) -> str:
    if state.down_left > 0:
        return f"{state.name} DOWN"
    queue = f" q={state.queue}" if state.queue else ""
    return f"{state.name} {state.utilization:.0%}{queue}"


class Api:
    """The two calls the simulator makes, with errors turned into one clear message."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"x-api-key": api_key} if api_key else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT_SECONDS)

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            raise click.ClickException(f"cannot reach the API at {self.url} (is it running?)") from None
        except httpx.TimeoutException:
            raise click.ClickException(
                f"the API at {self.url} did not answer within {REQUEST_TIMEOUT_SECONDS:.0f} s"
            ) from None
        except httpx.HTTPError as exc:
            raise click.ClickException(f"calling {self.url}{path} failed: {type(exc).__name__}") from None
        if response.status_code == 401:
            raise click.ClickException("the API refused the key (401): pass --api-key or set API_KEY")
        return response

    def targets(self) -> list[dict[str, Any]]:
        response = self.call("GET", "/api/targets")
        if response.status_code != 200:
            raise click.ClickException(f"GET /api/targets answered {response.status_code}: {error_text(response)}")
        return response.json().get("targets", [])

    def post(self, samples: list[dict[str, Any]]) -> httpx.Response:
        return self.call("POST", "/api/telemetry", json={"samples": samples})


def error_text(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="How long to run.")  # fmt: skip
@click.option("--url", default="http://localhost:9000", show_default=True, help="Base URL of the API.")
@click.option("--api-key", envvar="API_KEY", default=None,
              help="x-api-key to send (default: the first key in $API_KEY).")  # fmt: skip
@click.option("--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True,
              help="Seconds between batches.")  # fmt: skip
@click.option("--seed", type=int, default=None, help="Seed for a repeatable run.")
def main(seconds: float, url: str, api_key: str | None, interval: float, seed: int | None) -> None:
    """Post realistic telemetry for the configured targets to POST /api/telemetry."""
    rng = random.Random(seed)
    api = Api(url, api_key.split(",")[0].strip() if api_key else None)
    targets = api.targets()
    if not targets:
        raise click.ClickException("the API has no targets: configure model servers or register an agent first")
    states = [initial_state(t, rng) for t in targets]
    click.echo(f"simulating {len(states)} targets ({', '.join(s.name for s in states)}) for {seconds:g} s")
    started = time.monotonic()
    ticks = max(1, math.ceil(seconds / interval))
    sent = accepted = 0
    for tick in range(ticks):
        for state in states:
            step(state, rng)
        batch = [sample(state, rng, time.time()) for state in states]
        response = api.post(batch)
        sent += len(batch)
        elapsed = time.monotonic() - started
        if response.status_code == 202:
            accepted += response.json().get("accepted", 0)
            status = f"{response.json().get('accepted', 0)} accepted"
        else:
            status = f"HTTP {response.status_code}: {error_text(response)}"
        click.echo(f"[{elapsed:6.1f} s] {status} | " + ", ".join(describe(s) for s in states))
        if tick + 1 < ticks:
            time.sleep(max(0.0, started + (tick + 1) * interval - time.monotonic()))
    click.echo(f"done: {accepted} of {sent} samples accepted")


if __name__ == "__main__":
    main()
