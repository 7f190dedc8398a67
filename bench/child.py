"""``python -m bench.child SPEC_JSON``: one system through one phase, in a process of its
own (the libraries never share an interpreter, and every run starts cold the same way).
Prints the :class:`~bench.model.Measurement` as JSON on a line starting ``BENCH-RESULT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from bench.driver import Target, run_phase
from bench.model import RESULT_MARK, Measurement, RunSpec


def make_target(spec: RunSpec) -> Target:
    """The system's target; its library is imported only here, in its own process."""
    if spec.system in ("sasfleet", "sasfleet-1by1"):
        from bench.sasfleet_runner import SasFleetTarget

        return SasFleetTarget(spec, coalesce=100 if spec.system == "sasfleet" else 1)
    if spec.system in ("celery", "celery-threads"):
        from bench.peers.celery_runner import CeleryTarget

        return CeleryTarget(spec, "prefork" if spec.system == "celery" else "threads")
    if spec.system == "dramatiq":
        from bench.peers.dramatiq_runner import DramatiqTarget

        return DramatiqTarget(spec)
    if spec.system == "taskiq":
        from bench.peers.taskiq_runner import TaskiqTarget

        return TaskiqTarget(spec)
    if spec.system == "raw":
        from bench.raw_amqp import RawTarget

        return RawTarget(spec)
    raise ValueError(f"unknown system {spec.system!r}")


async def run(spec: RunSpec) -> Measurement:
    """Run ``spec``. The first SIGTERM or SIGINT cancels the run, so the workers are
    stopped and the run's queues and keys deleted on the way out; later ones are ignored
    so that they cannot cut that clean-up short."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)
        main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    return await run_phase(make_target(spec), spec)


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    spec = RunSpec.from_json(sys.argv[1])
    try:
        result = asyncio.run(run(spec))
    except (Exception, asyncio.CancelledError) as exc:
        result = Measurement.failed(spec, f"{type(exc).__name__}: {exc}"[:2000])
    with contextlib.suppress(BrokenPipeError):
        print(RESULT_MARK + result.to_json(), flush=True)
    sys.exit(0 if not result.error else 1)


if __name__ == "__main__":
    main()
