"""Ends everything an embedded tritonserver started, whenever the server exits.

Why a process of its own: the Python backend's stub processes
(`triton_python_backend_stub`) outlive their server. Killed with it, or
after it crashed, they are re-parented to PID 1, ignore SIGTERM and keep
their CPU (and, on a GPU host, the model's memory). The server runs in a
process group of its own, and its stubs stay in that group, so one SIGKILL
to the group ends them all; but tuner can only send it while tuner lives.
If tuner itself is killed (SIGKILL, the OOM killer), the server dies with it
(PR_SET_PDEATHSIG) and nobody is left to end the stubs.

So `EmbeddedServer.start` also starts this keeper, outside the server's group
and not tied to tuner's death: it waits until the server exits (for any
reason) or tuner goes away (its end of a pipe closes), then SIGKILLs the
server's process group, removes the server's shared-memory regions (the
Python backend's, named by a prefix of the server's own) and exits.

    python -m tuner.server.keeper SERVER_PID [SHM_PREFIX]   (stdin: a pipe tuner holds open)
"""

from __future__ import annotations

import os
import re
import select
import signal
import sys
import time

POLL_S = 0.5  # where pidfd_open is missing: how often to look at the server


def _gone(pid: int) -> bool:
    """The process exited (a zombie counts: it runs nothing any more)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def wait_for_exit(server_pid: int, parent_fd: int) -> str:
    """Block until the server exits or the parent's pipe closes; say which."""
    try:
        pidfd = os.pidfd_open(server_pid)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        fds = [parent_fd] + ([pidfd] if pidfd is not None else [])
        ready, _, _ = select.select(fds, [], [], None if pidfd is not None else POLL_S)
        if pidfd is not None and pidfd in ready:
            return "server exited"
        if parent_fd in ready and not os.read(parent_fd, 4096):
            return "tuner went away"
        if pidfd is None and _gone(server_pid):
            return "server exited"


def end_group(pgid: int, grace_s: float = 0.0) -> None:
    """SIGKILL every process of the group (the stubs ignore SIGTERM)."""
    if grace_s > 0:
        time.sleep(grace_s)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


SHM_DIR = "/dev/shm"


def remove_shm_regions(prefix: str) -> int:
    """Remove the shared-memory regions whose names start with `prefix`; return how many."""
    # a prefix of tuner's own shape only: an empty or odd one must never match a stranger's
    if not re.fullmatch(r"tuner_\d+_\d+_", prefix):
        return 0
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(prefix)]
    except OSError:
        return 0
    removed = 0
    for name in names:
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed += 1
        except OSError:
            pass
    return removed


def main(argv: list[str]) -> int:
    server_pid = int(argv[0])
    # Ctrl-C in tuner's terminal reaches the whole foreground group: this keeper
    # must outlive it to clean up after the server.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wait_for_exit(server_pid, sys.stdin.fileno())
    end_group(server_pid)  # the server leads its own group: its pid is the group id
    if len(argv) > 1:
        remove_shm_regions(argv[1])
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a process by EmbeddedServer
    sys.exit(main(sys.argv[1:]))
