"""The fast worker under pyinstrument: ``python -m modelreasoner.worker --burst`` in this process,
with one profiler on the main thread (RQ's dequeue loop) and one per job on the job's thread
(RQ's ``perform_job``: its bookkeeping around ``process_job``, and the job itself).

    python -m bench.profiled_worker OUTDIR [--concurrency 1] [--interval-ms 0.5]

Writes OUTDIR/jobs.txt (the job threads' sessions, combined: a call tree and the functions with
the most self time) and OUTDIR/dequeue.txt (the main thread). pyinstrument samples wall-clock
time: with several jobs in flight, time a thread spends waiting for the GIL is charged to
whatever it was running, so ``--concurrency 1`` gives the cleanest picture of one job.
Run by ``python -m bench.worker_profile --parts profile``, which queues the jobs first.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import click
from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session


def render(session: Session, title: str) -> str:
    # RQ's frames are shown (not folded as a library's): its per-job bookkeeping is the baseline.
    options = {"filter_threshold": 0.01, "show_regex": r".*/rq/.*"}
    tree = ConsoleRenderer(unicode=True, color=False, processor_options=options)
    flat = ConsoleRenderer(unicode=True, color=False, flat=True, flat_time="self")
    top = "\n".join(flat.render(session).splitlines()[:45])
    return f"# {title}\n\n## call tree (nodes under 1 % hidden)\n\n{tree.render(session)}\n## self time\n\n{top}\n"


def profile_jobs(worker_class: type, interval: float) -> list[Session]:
    """Wrap ``worker_class.perform_job`` so each job runs under its own profiler."""
    sessions: list[Session] = []
    lock = threading.Lock()
    original = worker_class.perform_job

    @functools.wraps(original)
    def perform_job(self, *args, **kwargs):
        profiler = Profiler(interval=interval)
        profiler.start()
        try:
            return original(self, *args, **kwargs)
        finally:
            session = profiler.stop()
            with lock:
                sessions.append(session)

    worker_class.perform_job = perform_job
    return sessions


@click.command()
@click.argument("outdir", type=click.Path(path_type=Path))
@click.option("--concurrency", default=1, show_default=True)
@click.option("--interval-ms", default=0.5, show_default=True, help="pyinstrument's sampling interval.")
def main(outdir: Path, concurrency: int, interval_ms: float) -> None:
    from modelreasoner import worker

    interval = interval_ms / 1000.0
    sessions = profile_jobs(worker.ScrubbedThreadedWorker, interval)
    main_thread = Profiler(interval=interval)
    main_thread.start()
    try:
        worker.main(["--concurrency", str(concurrency), "--burst", "--name", "profiled"], standalone_mode=False)
    finally:
        dequeue = main_thread.stop()
    if not sessions:
        raise click.ClickException("no job ran under the profiler")
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = functools.reduce(Session.combine, sessions)
    (outdir / "jobs.txt").write_text(render(jobs, f"{len(sessions)} jobs, concurrency {concurrency}: job threads"))
    (outdir / "dequeue.txt").write_text(render(dequeue, "main thread: start-up and RQ's dequeue loop"))
    click.echo(f"profiled {len(sessions)} jobs; wrote {outdir}/jobs.txt and {outdir}/dequeue.txt")


if __name__ == "__main__":
    main()
