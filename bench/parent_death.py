"""``python -m bench.parent_death PID CMD...``: become CMD, set to receive SIGTERM when
process PID (the benchmark process that started it) dies, even of SIGKILL.

A killed benchmark otherwise leaves its peers' workers and its run children consuming
messages and CPU for good, and skews whatever runs on the machine next. SIGTERM, not
SIGKILL: each library then stops its own children (Celery's pool, Dramatiq's processes),
and a run child stops its workers and deletes its queues and keys.

Linux's ``PR_SET_PDEATHSIG`` survives ``exec``, so CMD keeps the PID its parent knows it by
(CPU accounting and stop-by-PID rely on that). The signal follows the *thread* that forked
the child: start guarded processes from a thread that lives as long as the benchmark (all
of bench's do, from the main thread). Elsewhere CMD runs unguarded.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def guarded(cmd: list[str]) -> list[str]:
    """``cmd`` wrapped so that it gets SIGTERM once this process is gone."""
    return [sys.executable, "-m", "bench.parent_death", str(os.getpid()), *cmd]


def _ask_for_sigterm_on_parent_death() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[0].isdigit():
        sys.exit("usage: python -m bench.parent_death PARENT_PID CMD [ARG...]")
    parent, cmd = int(argv[0]), argv[1:]
    if sys.platform == "linux":
        _ask_for_sigterm_on_parent_death()
        # The parent may have died before prctl: then no signal will ever come.
        if os.getppid() != parent:
            sys.exit(f"bench.parent_death: process {parent} is gone; not starting {cmd[0]}")
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    main(sys.argv[1:])
