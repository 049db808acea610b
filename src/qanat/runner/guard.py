"""Children that die with their supervisor: a parent-death signal set before ``exec``.

Instances run in their own sessions (so Ctrl-C in the terminal reaches only the
supervisor, which then stops them in order). The price: if the supervisor is
killed outright (SIGKILL, OOM killer), nobody would stop them. On Linux the
kernel can: ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` asks it to send SIGTERM to
the process when its parent dies, and the setting survives ``execve``. An
instance that gets it drains as on any SIGTERM (deregisters, finishes
in-flight requests) and exits.

The setting has to be made in the child. ``preexec_fn`` is unsafe in a
process with threads (the child of a fork may deadlock on a lock another
thread held), so the child is first a two-line Python program
(``-S``: no site import, ~20 ms) that sets the signal, checks the supervisor
did not die in the meantime, and ``exec``\\ s the real command in place, same
pid. Elsewhere than Linux the command runs unguarded.
"""

from __future__ import annotations

import os
import signal
import sys

# Run as ``python -S -c GUARD_CODE SUPERVISOR_PID SIGNAL ARGV...``.
GUARD_CODE = (
    "import ctypes,os,sys\n"
    "ppid,sig,argv=int(sys.argv[1]),int(sys.argv[2]),sys.argv[3:]\n"
    "ctypes.CDLL(None,use_errno=True).prctl(1,sig,0,0,0)\n"  # 1 = PR_SET_PDEATHSIG
    # The supervisor may have died before prctl took effect: then we are already orphaned.
    "os.getppid()==ppid or sys.exit(0)\n"
    "os.execv(argv[0],argv)\n"
)


def guarded(argv: list[str], *, sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` wrapped so that the process receives ``sig`` when this process dies.

    Returns ``argv`` unchanged where the kernel has no parent-death signal.
    """
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-S", "-c", GUARD_CODE, str(os.getpid()), str(int(sig)), *argv]
