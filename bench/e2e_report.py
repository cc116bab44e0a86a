"""The table bench.e2e prints: every figure of issue 12 with its baseline from the same run, the
ratio and the goal; and the block of docs/benchmarks/e2e.md it replaces."""

from __future__ import annotations

import statistics
from pathlib import Path

from bench.e2e_phases import SLOW_MODEL_MS
from bench.e2e_probes import Counted

BEGIN, END = "<!-- bench.e2e:begin -->", "<!-- bench.e2e:end -->"


def verdict(ok: bool) -> str:
    return "met" if ok else "**MISSED**"


def throughput_rows(r: dict) -> list[tuple[str, ...]]:
    a, p1, p2 = r["bare"], r["p1"], r["p1"]
    ratio = p1["jobs_per_s"] / a
    rows = [
        (
            "(P1) pipeline jobs/s, HTTP submit → completed in Postgres",
            f"{p1['jobs_per_s']:.0f} jobs/s",
            f"bare RQ, 1 SimpleWorker, no-op jobs: {a:.0f} jobs/s",
            f"{ratio:.2f}×",
            "≥ 0.5×",
            verdict(ratio >= 0.5),
        )
    ]
    for q, goal in (("p50", 5.0), ("p99", 25.0)):
        rows.append(
            (
                f"(P2) overhead {q} at {p2['rate']:.0f} jobs/s (half of peak, {p2['n']} jobs)",
                f"{p2[q]:.1f} ms",
                "absolute goal",
                "",
                f"≤ {goal:.0f} ms",
                verdict(p2[q] <= goal),
            )
        )
    return rows


def submit_row(runs: dict, seconds: int) -> tuple[str, ...]:
    real, bare = runs["pipeline"], runs["bare"]
    ratio = statistics.fmean(r["rps"] for r in real) / statistics.fmean(r["rps"] for r in bare)

    def show(values: list[dict]) -> str:
        rps = ", ".join(f"{r['rps']:.0f}" for r in values)
        p50 = ", ".join(f"{r['p50_ms']:.0f}" for r in values)
        return f"{rps} req/s (p50 {p50} ms)"

    return (
        f"(P3) `POST /api/submit`, one uvicorn process, `wrk -t2 -c32 -d{seconds}s`, alternated {len(real)}×",
        show(real),
        f"bare FastAPI + one RQ enqueue: {show(bare)}",
        f"{ratio:.2f}×",
        "≥ 0.6×",
        verdict(ratio >= 0.6),
    )


def slow_rows(p6: dict[int, float]) -> list[tuple[str, ...]]:
    rows = []
    for concurrency, measured in p6.items():
        ideal = concurrency / (SLOW_MODEL_MS / 1000.0)
        goal = 0.9 if concurrency <= 16 else 0.8
        rows.append(
            (
                f"(P6) one worker process, concurrency {concurrency}, {SLOW_MODEL_MS:.0f} ms model servers",
                f"{measured:.0f} jobs/s",
                f"ideal {concurrency} / {SLOW_MODEL_MS / 1000:.1f} s = {ideal:.0f} jobs/s",
                f"{measured / ideal:.2f}×",
                f"≥ {goal}×",
                verdict(measured >= goal * ideal),
            )
        )
    return rows


def stock_rows(stock: dict) -> list[tuple[str, ...]]:
    floor = stock["noop"]
    rows = []
    for label, result in stock["pipeline"].items():
        rows.append(
            (
                f"stock `rq worker pedi-screen`, {label}: overhead per job, p50 (mean; {result['n']} jobs)",
                f"{result['p50']:.0f} ms ({result['mean']:.0f} ms)",
                f"stock `rq worker`, one no-op job's cycle: {floor['p50']:.0f} ms ({floor['mean']:.0f} ms)",
                f"{result['p50'] / floor['p50']:.1f}×",
                "≤ 150 ms",
                verdict(result["p50"] <= 150),
            )
        )
    return rows


def cost_rows(bare: Counted, submitted: Counted, drained: Counted, concurrency: int) -> list[tuple[str, ...]]:
    cpu, bare_cpu = drained.per_job(drained.cpu_ms), bare.per_job(bare.cpu_ms)
    api_r, worker_r, bare_r = (c.per_job(c.redis.commands) for c in (submitted, drained, bare))
    api_x, worker_x, bare_x = (c.per_job(c.redis.execs) for c in (submitted, drained, bare))
    api_s, worker_s = submitted.per_job(submitted.pg.statements), drained.per_job(drained.pg.statements)
    api_t, worker_t = submitted.per_job(submitted.pg.transactions), drained.per_job(drained.pg.transactions)
    return [
        (
            f"worker CPU per job (user + system; one worker, concurrency {concurrency}, {drained.jobs} queued jobs)",
            f"{cpu:.1f} ms",
            f"bare RQ SimpleWorker, per no-op job: {bare_cpu:.2f} ms",
            f"{cpu / bare_cpu:.0f}×",
            "",
            "",
        ),
        (
            "Redis commands per job: submit + worker (of them EXEC, i.e. MULTI/EXEC pipelines)",
            f"{api_r:.1f} + {worker_r:.1f} = {api_r + worker_r:.1f} ({api_x:.1f} + {worker_x:.1f} EXEC)",
            f"bare RQ, enqueue + work: {bare_r:.1f} ({bare_x:.1f} EXEC)",
            f"{(api_r + worker_r) / bare_r:.1f}×",
            "",
            "",
        ),
        (
            "Postgres round trips (statements, BEGIN/COMMIT included) per job: submit + worker",
            f"{api_s:.1f} + {worker_s:.1f} = {api_s + worker_s:.1f} (transactions {api_t:.1f} + {worker_t:.1f})",
            "bare RQ: none",
            "",
            "",
            "",
        ),
    ]


def table(results: dict, header: list[str]) -> str:
    rows = [
        *throughput_rows(results),
        submit_row(results["p3"], results["wrk_seconds"]),
        *slow_rows(results["p6"]),
        *stock_rows(results["stock"]),
        *cost_rows(results["bare_counts"], *results["counts"], results["worker_concurrency"]),
    ]
    lines = ["| figure | this run | baseline, same run | ratio | goal | |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*header, "", *lines]) + "\n"


def write_report(out: Path, text: str) -> None:
    """Put ``text`` between the markers of ``out``, keeping the hand-written reading around it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    current = out.read_text() if out.exists() else f"# End-to-end benchmark\n\n{BEGIN}\n{END}\n"
    if BEGIN not in current:
        current = f"{current.rstrip()}\n\n{BEGIN}\n{END}\n"
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    out.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
