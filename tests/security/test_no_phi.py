"""No PHI outside Postgres, and no API key anywhere, on a real stack at DEBUG log level.

A unique marker goes into the observations of every request, successful or not: jobs that
complete, fail over, fail, replays, conflicts, validation errors, unauthenticated requests. Then
every Redis key is read by type (not DUMPed: RDB compression could hide a string), every value
is also decoded the ways RQ encodes (zlib-compressed pickles and exception text in job hashes,
base64 + zlib in the results streams), every log line of the API and the worker is searched,
and so are /metrics and every error body. Postgres is the positive control: the marker must be
there, in the observations column.

Failure paths get their own test: jobs that fail inside the worker (a model server that always
answers 500) and a worker path that crashes on a database error quoting the job's row, marker
included ("Failing row contains (...)"), under the threaded worker and stock ``rq worker``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import io
import json
import logging
import pickle
import time
import uuid
import zlib

import httpx
import pytest
import redis
from rq import Queue, SimpleWorker, Worker
from rq.registry import FailedJobRegistry
from rq.timeouts import JobTimeoutException
from sqlalchemy import create_engine, func, select, text

from modelreasoner import rq_adapter
from orchestrator.constants import QUEUE_NAME
from orchestrator.models import Audit, Job
from tests.support.env import free_port

pytestmark = [pytest.mark.security, pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

MARKER = f"PHI-{uuid.uuid4().hex[:12]}-MARKER"
KEY_A, KEY_B = f"phi-key-a-{uuid.uuid4().hex[:10]}", f"phi-key-b-{uuid.uuid4().hex[:10]}"
SECRETS = (MARKER, KEY_A, KEY_B)


def observation(n: int) -> str:
    return f"At 24 months {MARKER} says {n} words and does not point"


def decodings(value: bytes, depth: int = 2) -> list[str]:
    """What a Redis value may hide, as text: its zlib decompression (RQ's job ``data`` pickle and
    ``exc_info``), its base64 decoding then decompression (the results stream's ``exc_string``),
    base64 pickles (``return_value``), recursively."""
    found: list[bytes] = []
    for attempt in (zlib.decompress, lambda v: base64.b64decode(v, validate=True)):
        try:
            found.append(attempt(value))
        except (zlib.error, binascii.Error, ValueError):
            continue
    texts = []
    for raw in found:
        texts.append(raw.decode("utf-8", "replace"))
        with contextlib.suppress(Exception):  # most values are not pickles; this Redis is our own
            texts.append(repr(pickle.loads(raw)))
        if depth > 1:
            texts.extend(decodings(raw, depth - 1))
    return texts


def flatten(value) -> list[bytes]:
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, dict):
        return [b for k, v in value.items() for b in (*flatten(k), *flatten(v))]
    if isinstance(value, list | tuple | set):
        return [b for item in value for b in flatten(item)]
    return []


def redis_dump(client: redis.Redis) -> str:
    """Every key and every value of every type, as text, plus each value's decodings."""
    parts = []
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "string":
            value = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "list":
            value = client.lrange(key, 0, -1)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = client.xrange(key)
        else:
            raise AssertionError(f"unexpected Redis type {kind} for {key!r}")
        parts.append(f"{key!r} {kind} {value!r}")
        parts.extend(f"{key!r} decoded {text}" for raw in flatten(value) for text in decodings(raw))
    return "\n".join(parts)


def leaks_in(places: dict[str, str]) -> list[str]:
    return [f"{secret[:12]}... in {place}" for place, text in places.items() for secret in SECRETS if secret in text]


def exercise(api_url: str) -> tuple[list[str], list[str]]:
    """Every kind of request, each carrying the marker. Returns (accepted ids, error bodies)."""
    accepted, errors = [], []
    with httpx.Client(base_url=api_url, timeout=10) as client:

        def post(body: dict | None = None, key: str | None = KEY_A, **kwargs) -> httpx.Response:
            headers = {"x-api-key": key} if key else {}
            headers.update(kwargs.pop("headers", {}))
            response = client.post("/api/submit", json=body, headers=headers, **kwargs)
            if response.status_code == 202:
                accepted.append(response.json()["job_id"])
            else:
                errors.append(response.text)
            return response

        for n in range(6):
            assert post({"age_months": 24, "observations": observation(n), "sla_ms": 30_000}).status_code == 202
        assert post({"age_months": 24, "observations": observation(7)}, key=KEY_B).status_code == 202
        edge = {"age_months": 18, "observations": observation(8), "preferred_target": "edge", "sla_ms": 30_000}
        assert post(edge).status_code == 202
        replay = {"age_months": 30, "observations": observation(9)}
        assert post(replay, headers={"Idempotency-Key": "phi-replay"}).status_code == 202
        assert post(replay, headers={"Idempotency-Key": "phi-replay"}).status_code == 202
        conflict = {"age_months": 31, "observations": observation(10)}
        assert post(conflict, headers={"Idempotency-Key": "phi-replay"}).status_code == 409
        assert post({"age_months": 2, "observations": observation(11)}, key=None).status_code == 401
        assert post({"age_months": 2, "observations": observation(12)}, key="wrong-" + MARKER).status_code == 401
        assert post({"age_months": 999, "observations": observation(13)}).status_code == 422
        assert post({"age_months": 2, "observations": observation(14) + "\x00"}).status_code == 422
        assert post({"age_months": 2, "observations": observation(15) * 200}).status_code == 422
        # An unknown field is named in the error (that is how a typo is found), its value never.
        assert post({"age_months": 2, "observations": "ok", "observation": observation(16)}).status_code == 422
        broken = client.post(
            "/api/submit",
            content=f'{{"age_months": 2, "observations": "{MARKER}'.encode(),
            headers={"x-api-key": KEY_A, "content-type": "application/json"},
        )
        assert broken.status_code == 422
        errors.append(broken.text)
    return list(dict.fromkeys(accepted)), errors


def test_no_phi_and_no_key_outside_postgres(stack, pg_url, redis_server):
    stack.model_server("gpu", tier="gpu", latency_ms=5, jitter=0, fail_rate=0)
    stack.model_server("edge", tier="edge", fault="http_500")
    api = stack.api(api_key=f"{KEY_A},{KEY_B}", LOG_LEVEL="DEBUG")
    worker_metrics = free_port()
    stack.worker(concurrency=4, LOG_LEVEL="DEBUG", METRICS_PORT=str(worker_metrics))

    accepted, error_bodies = exercise(api.url)
    statuses = [api.wait(job_id, timeout=30) for job_id in accepted]
    assert {s["status"] for s in statuses} <= {"completed", "failed"}
    assert any(a["outcome"] == "http_5xx" for s in statuses for a in s["attempts"]), "a failover happened"

    client = redis_server.client()
    dumped = redis_dump(client)
    client.close()
    assert "rq:queue:pedi-screen" in dumped or "rq:job:" in dumped, "the dump really read RQ's keys"
    api_metrics = httpx.get(f"{api.url}/metrics", timeout=5).text
    worker_metrics_text = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=5).text
    assert "pedi_jobs_completed_total" in worker_metrics_text
    logs = {p.name: p.log_text() for p in stack.processes if not p.name.startswith("model-")}
    assert any(f"{accepted[0]}" in text for text in logs.values()), "the logs really mention the jobs"
    status_bodies = [str(s) for s in statuses]

    places = {
        "redis": dumped,
        "api /metrics": api_metrics,
        "worker /metrics": worker_metrics_text,
        "error bodies": "\n".join(error_bodies),
        "job status bodies": "\n".join(status_bodies),
        **{f"log of {name}": text for name, text in logs.items()},
    }
    leaks = leaks_in(places)
    assert not leaks, leaks

    engine = create_engine(pg_url)
    with engine.connect() as connection:
        stored = connection.scalar(select(func.count()).where(Job.observations.contains(MARKER)))
        actors = set(connection.scalars(select(Audit.actor).where(Audit.event == "submitted")))
    engine.dispose()
    assert stored == len(accepted), "control: the marker is in Postgres, where it belongs"
    assert actors and all(actor.startswith("key-") for actor in actors) and len(actors) == 2


def test_the_redis_dump_reads_every_type(redis_url):
    client = redis.Redis.from_url(redis_url)
    client.set("s", MARKER)
    client.hset("h", "f", MARKER)
    client.rpush("l", MARKER)
    client.sadd("st", MARKER)
    client.zadd("z", {MARKER: 1})
    client.xadd("x", {"f": MARKER})
    client.set("z1", zlib.compress(pickle.dumps(("process_job", (MARKER,)))))
    client.hset("h2", "exc_info", zlib.compress(MARKER.encode()))
    client.xadd("x2", {"exc_string": base64.b64encode(zlib.compress(MARKER.encode()))})
    client.xadd("x3", {"return_value": base64.b64encode(pickle.dumps({"s": MARKER}))})
    dumped = redis_dump(client)
    client.close()
    assert dumped.count(MARKER) >= 10
    for key in ("z1", "h2", "x2", "x3"):
        assert any(MARKER in line for line in dumped.splitlines() if line.startswith(f"b'{key}' decoded")), key


# --- failure paths: jobs that fail or crash inside the worker ----------------------------------------

CRASH_TOKEN = "CRASH-ON-WRITE"
PLAN_CRASH_TOKEN = "CRASH-IN-PLAN"


@pytest.fixture
def crash_on_terminal_write(pg_url):
    """Make the terminal write of a job whose observations hold CRASH_TOKEN fail the way
    Postgres fails a row it cannot store: with an error that quotes the whole row, observations
    (and so the marker) included: ``DETAIL: Failing row contains (...)``."""
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "ALTER TABLE jobs ADD CONSTRAINT ck_test_crash_on_write CHECK "
                f"(status NOT IN ('completed', 'failed') OR observations NOT LIKE '%{CRASH_TOKEN}%') NOT VALID"
            )
        )
    yield
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE jobs DROP CONSTRAINT IF EXISTS ck_test_crash_on_write"))
    engine.dispose()


@pytest.fixture
def crash_in_plan(pg_url):
    """Make the ``call_started`` audit row, written inside the call plan just before a call
    leaves (with the decision), fail for a job whose observations hold PLAN_CRASH_TOKEN, with an
    error quoting those observations: a crash inside the call plan, which the worker catches,
    logs and turns into a failed job. (A failed call's ``attempt`` row is no longer written on
    its own between calls: it goes with the next call's start or with the finish.)"""
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                f"""
CREATE FUNCTION test_crash_in_plan() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    obs text;
BEGIN
    SELECT observations INTO obs FROM jobs WHERE id = NEW.job_id;
    IF NEW.event = 'call_started' AND obs LIKE '%{PLAN_CRASH_TOKEN}%' THEN
        RAISE EXCEPTION 'cannot store the attempt of %', obs USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$"""
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER test_crash_in_plan BEFORE INSERT ON audit "
                "FOR EACH ROW EXECUTE FUNCTION test_crash_in_plan()"
            )
        )
    yield
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER IF EXISTS test_crash_in_plan ON audit"))
        connection.execute(text("DROP FUNCTION IF EXISTS test_crash_in_plan()"))
    engine.dispose()


def wait_failed_in_rq(client: redis.Redis, job_ids: list[str], timeout: float = 30.0) -> None:
    registry = FailedJobRegistry(QUEUE_NAME, connection=client)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(job_ids) <= set(registry.get_job_ids()):
            return
        time.sleep(0.1)
    raise AssertionError(f"not in RQ's failed registry: {set(job_ids) - set(registry.get_job_ids())}")


@pytest.mark.usefixtures("crash_on_terminal_write", "crash_in_plan")
@pytest.mark.parametrize("kind", ["threaded", "rq"])
def test_failed_and_crashed_jobs_leave_no_phi_in_redis_or_logs(stack, pg_url, redis_server, kind):
    stack.model_server("edge", tier="edge", fault="http_500")  # the only target always answers 500
    api = stack.api(api_key=KEY_A, LOG_LEVEL="DEBUG")
    stack.worker(kind=kind, concurrency=2, LOG_LEVEL="DEBUG")

    # Fail inside the worker: every call answers 500.
    doomed = [api.submit(age_months=18, observations=observation(n), sla_ms=30_000)["job_id"] for n in range(2)]
    # Crashes the worker path: the terminal write raises a DB error that quotes the row.
    crashing = api.submit(age_months=20, observations=f"{observation(99)} {CRASH_TOKEN}", sla_ms=30_000)["job_id"]
    # Crashes inside the call plan: the worker logs the crash and fails the job.
    in_plan = api.submit(age_months=22, observations=f"{observation(98)} {PLAN_CRASH_TOKEN}", sla_ms=30_000)["job_id"]
    failed_in_postgres = [j for j in doomed if api.wait(j, timeout=30)["status"] == "failed"]
    client = redis_server.client()
    try:
        wait_failed_in_rq(client, [*failed_in_postgres, crashing, in_plan])
        dumped = redis_dump(client)
    finally:
        client.close()
    logs = {p.name: p.log_text() for p in stack.processes if not p.name.startswith("model-")}

    # Controls: the failures really happened, RQ really stored them, and the dump decoded them.
    assert failed_in_postgres, "a job failed inside the worker"
    assert "JobFailed: job failed: all_targets_failed" in dumped, "RQ's stored failure was decoded"
    leaks = leaks_in({"redis": dumped, **{f"log of {name}": text for name, text in logs.items()}})
    assert not leaks, leaks
    assert "JobCrashed: worker error (IntegrityError)" in dumped, "the crash reached RQ, as its stand-in"
    worker_log = next(text for name, text in logs.items() if name.startswith("worker-"))
    assert "job raised in the worker" in worker_log and "IntegrityError" in worker_log
    assert "job crashed in the worker" in worker_log and "<message withheld" in worker_log
    plan_status = api.status(in_plan)
    assert plan_status["status"] == "failed" and plan_status["error_kind"] == "internal_error", plan_status
    engine = create_engine(pg_url)
    with engine.connect() as connection:
        row = connection.execute(select(Job.observations).where(Job.id == uuid.UUID(crashing))).scalar_one()
    engine.dispose()
    assert MARKER in row and CRASH_TOKEN in row, "control: the row Postgres quoted holds the marker"


def test_rq_failure_path_still_has_the_shape_the_adapter_overrides():
    """modelreasoner.rq_adapter overrides Worker._finalize_failure(job, queue, execution, exc_info)
    and handle_exception(job, *exc_info); a new RQ that renames or reshapes them must fail here."""
    finalize = inspect.signature(Worker._finalize_failure)
    assert list(finalize.parameters) == ["self", "job", "queue", "execution", "exc_info"]
    handle = inspect.signature(Worker.handle_exception)
    assert [p.kind for p in handle.parameters.values()][-1] is inspect.Parameter.VAR_POSITIONAL
    source = inspect.getsource(Worker._finalize_failure)
    assert "self.handle_exception(job, *exc_info)" in source and "format_exc_info(exc_info)" in source


def test_the_adapter_replaces_any_exception_text_by_its_type():
    try:
        raise ValueError(f"Failing row contains ({MARKER})")
    except ValueError as exc:
        exc_info = (type(exc), exc, exc.__traceback__)
    kind, value, tb = rq_adapter.safe_exc_info(exc_info)
    assert kind is rq_adapter.JobCrashed and tb is None and MARKER not in str(value) and "ValueError" in str(value)
    timeout = JobTimeoutException("Task exceeded maximum timeout value (300 seconds)")
    assert rq_adapter.crashed(timeout) is timeout, "RQ's own timeout keeps its (PHI-free) text"
    assert isinstance(rq_adapter.crashed(ValueError(MARKER)), rq_adapter.JobCrashed)
    failed = rq_adapter.JobFailed(f"bad {MARKER}")
    assert str(failed) == "job failed: unknown"
    assert rq_adapter.safe_exc_info((type(failed), failed, None))[1] is failed


def test_logged_exceptions_keep_their_traceback_but_not_their_text():
    """The formatter every process's JSON handler uses (the worker log above shows it in place)."""
    from orchestrator.errors import DatabaseUnavailable
    from orchestrator.logs import FORMAT, PhiSafeJsonFormatter

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(PhiSafeJsonFormatter(FORMAT))
    log = logging.getLogger("test.no_phi.formatter")
    log.addHandler(handler)
    log.propagate = False
    try:
        try:
            try:
                raise ValueError(f"Failing row contains ({MARKER})")
            except ValueError:
                raise DatabaseUnavailable("the database is unreachable") from None
        except DatabaseUnavailable:
            log.exception("ours")
        try:
            try:
                raise KeyError(MARKER)
            except KeyError as exc:
                raise RuntimeError(f"wrapped {MARKER}") from exc
        except RuntimeError:
            log.exception("theirs")
    finally:
        log.removeHandler(handler)
    ours, theirs = (json.loads(line) for line in stream.getvalue().splitlines())
    assert ours["exc_info"].endswith("DatabaseUnavailable: the database is unreachable")
    assert "builtins.KeyError: <message withheld" in theirs["exc_info"]
    assert "builtins.RuntimeError: <message withheld" in theirs["exc_info"]
    assert "test_no_phi.py" in theirs["exc_info"], "the frames are kept"
    assert MARKER not in stream.getvalue()


def raise_phi() -> None:
    """An RQ job function failing with PHI in its text (stands for any code outside process_job)."""
    raise ValueError(f"Failing row contains ({MARKER})")


class ScrubbedSimpleWorker(rq_adapter.ScrubbedFailures, SimpleWorker):
    pass


@pytest.mark.parametrize(("worker_class", "leaks"), [(SimpleWorker, True), (ScrubbedSimpleWorker, False)])
def test_the_worker_mixin_scrubs_what_rq_stores_and_logs(redis_url, caplog, worker_class, leaks):
    """A real RQ worker on a real Redis runs a job that raises outside process_job. Stock RQ
    stores and logs the text (the control); with ScrubbedFailures only the type's name remains."""
    connection = redis.Redis.from_url(redis_url)
    try:
        queue = Queue("phi-mixin", connection=connection)
        job = queue.enqueue(raise_phi)
        with caplog.at_level(logging.ERROR, logger="rq.worker"):
            worker_class([queue], connection=connection).work(burst=True)
        job.refresh()
        assert job.get_status() == "failed"
        stored = redis_dump(connection)
        logged = caplog.text
    finally:
        connection.close()
    assert "ValueError" in stored and "ValueError" in logged
    assert (MARKER in stored) is leaks and (MARKER in logged) is leaks
    if not leaks:
        assert "JobCrashed: worker error (ValueError)" in stored
