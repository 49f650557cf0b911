"""`mlops ui`'s servers as children it stops itself: `dg dev` (the webserver, the daemon, the
code servers and the runs they start) and, with --secure, nginx.

Each child runs in a session of its own, so a Ctrl-C in the terminal reaches it only through
here, once. SIGINT, SIGTERM, SIGHUP or SIGQUIT to `mlops ui` sends SIGINT (Dagster's graceful
shutdown, nginx's fast one) to each child's whole process group; whatever is still running after
:data:`GRACE` seconds is killed: the groups and every process seen descending from them. On
Linux `mlops ui` is the subreaper of its descendants, so a process whose parent died, or one
that started a session of its own, stays its descendant and is found and reaped too.

Killed by SIGKILL, which it cannot see, `mlops ui` still stops its servers on Linux: each child
gets SIGINT from the kernel when its parent dies (:func:`stopped_with_this_process`).

Why not exec `dg dev`: started where SIGINT is ignored (a background job of a script), `dg dev`
maps SIGTERM to that same "ignore" and nothing stops it; and `dg dev` waits up to a minute for
its code servers, longer than a service manager waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

import psutil

# SIGQUIT too (Ctrl-\): its default would end this process alone and leave the servers,
# which run in sessions of their own, serving with no parent.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
GRACE = 7.0  # seconds for the children's own shutdown before what is left is killed
POLL = 0.5  # seconds between looks at the children
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """A stop signal arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Supervisor:
    """Children started with :meth:`start`, stopped with everything they started when the
    ``with`` block ends (normally, by a signal as :class:`Stop`, or by an error).

    While it is active, SIGINT, SIGTERM, SIGHUP and SIGQUIT raise :class:`Stop` (also where the
    shell started this process with SIGINT ignored); the children start with the default
    handlers."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.children: dict[str, subprocess.Popen] = {}
        self._seen: dict[int, psutil.Process] = {}
        self._handlers: dict[int, object] = {}
        self._stopping = False
        self._hurry = False

    def __enter__(self) -> Supervisor:
        try:
            for signum in STOP_SIGNALS:
                self._handlers[signum] = signal.signal(signum, self._raise_stop)
            become_subreaper()
        except BaseException:  # a signal while they are set: __exit__ will not run
            self._restore_handlers()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A signal while stopping skips the rest of the grace period.
        self._stopping = True
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._hurry_up)
        try:
            self.stop()
        finally:
            self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _raise_stop(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping:  # already on its way out: only hurry
            self._hurry = True
            return
        self._stopping = True
        raise Stop(signum)

    def _hurry_up(self, _signum: int, _frame: FrameType | None) -> None:
        self._hurry = True

    def start(self, name: str, args: list[str], **popen: object) -> subprocess.Popen:
        """Start ``args`` in a new session (its own process group), stdin from /dev/null.
        Handlers this process installed are reset to the defaults by exec: the child stops on
        SIGINT and SIGTERM even when this process was started with them ignored. From the main
        thread only (as the handlers are): the child's stop when this process dies
        (:func:`stopped_with_this_process`) comes when the thread that started it ends."""
        popen.setdefault("stdin", subprocess.DEVNULL)
        popen["preexec_fn"] = stopped_with_this_process(popen.get("preexec_fn"))  # type: ignore[arg-type]
        process = subprocess.Popen(args, start_new_session=True, **popen)  # type: ignore[call-overload]
        self.children[name] = process
        return process

    def watch(self) -> tuple[str, int]:
        """Until a child exits: its name and exit code. A stop signal raises :class:`Stop`."""
        while True:
            for name, process in self.children.items():
                code = _exit_code(process)
                if code is not None:
                    return name, code
            self._remember()
            time.sleep(POLL)

    def wait_listening(self, name: str, port: int, timeout: float) -> bool:
        """Until something accepts connections on 127.0.0.1:``port`` (True), or child ``name``
        exits or ``timeout`` seconds pass (False)."""
        deadline = time.monotonic() + timeout
        while _exit_code(self.children[name]) is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return True
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        """SIGINT to every child's process group; after the grace period SIGKILL to the groups
        and to every descendant still running; every child reaped."""
        self._remember()
        # A child is reaped only below, after its group was signalled for the last time: until
        # then its pid (the group's id) stays taken, and killpg cannot reach a process that
        # got the number since.
        for process in self.children.values():
            if _exit_code(process) is None:
                _signal_group(process.pid, signal.SIGINT)
        deadline = time.monotonic() + self.grace
        while self._running() and time.monotonic() < deadline and not self._hurry:
            time.sleep(0.1)
            self._remember()
        for process in self.children.values():
            _signal_group(process.pid, signal.SIGKILL)
        self._remember()  # one started since the last look
        for member in self._running():
            with contextlib.suppress(psutil.Error):
                member.kill()
        for process in self.children.values():
            process.wait()
        psutil.wait_procs(list(self._seen.values()), timeout=2)
        self._reap_orphans()

    def _remember(self) -> None:
        """Note every process now descending from this one (the children's trees and, as
        subreaper, orphans of theirs), so one that is orphaned later is still stopped."""
        with contextlib.suppress(psutil.Error):
            for member in psutil.Process().children(recursive=True):
                known = self._seen.get(member.pid)
                if known is None or not known.is_running():  # new, or its pid reused
                    self._seen[member.pid] = member
        self._reap_orphans()

    def _running(self) -> list[psutil.Process]:
        running = []
        for member in self._seen.values():
            with contextlib.suppress(psutil.Error):
                if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                    running.append(member)
        return running

    def _reap_orphans(self) -> None:
        """Collect the exit status of orphans handed to this process as subreaper (not of the
        children started here: their Popen objects keep their exit codes)."""
        own = {process.pid for process in self.children.values()}
        with contextlib.suppress(psutil.Error):
            for member in psutil.Process().children():
                if member.pid not in own:
                    with contextlib.suppress(ChildProcessError, psutil.Error):
                        if member.status() == psutil.STATUS_ZOMBIE:
                            os.waitpid(member.pid, os.WNOHANG)


def _exit_code(process: subprocess.Popen) -> int | None:
    """``process``'s exit code (negative: the signal that ended it) once it has exited, else
    None; it is left unreaped (a zombie) so that its pid is not given to another process."""
    if process.returncode is not None:
        return process.returncode
    if not hasattr(os, "waitid"):  # macOS: reaped at once
        return process.poll()
    try:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped elsewhere
        return process.poll()
    if info is None:
        return None
    return -info.si_status if info.si_code in _BY_SIGNAL else info.si_status


_BY_SIGNAL = {getattr(os, name) for name in ("CLD_KILLED", "CLD_DUMPED") if hasattr(os, name)}


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stopped_with_this_process(
    then: Callable[[], None] | None = None,
) -> Callable[[], None] | None:
    """On Linux, what a child runs before its program (``preexec_fn``, followed by ``then``)
    so that the kernel sends it SIGINT, the stop :meth:`Supervisor.stop` sends first, when this
    process dies: also by SIGKILL, which no handler here sees. A child whose parent died before
    that is set exits at once. Only what the child itself then stops is stopped: `dg dev` stops
    its webserver, daemon and code servers. Elsewhere (or where prctl cannot be had): ``then``."""
    if not sys.platform.startswith("linux"):
        return then
    try:  # resolved here: a forked child must not load libraries (a lock may be held)
        prctl = ctypes.CDLL(None).prctl
    except (OSError, AttributeError):
        return then
    parent = os.getpid()
    option, signum = ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGINT)

    def preexec() -> None:
        # A refusal (a sandbox that filters prctl) leaves the child as it was without it.
        prctl(option, signum, ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
        if os.getppid() != parent:  # the parent died before the line above
            os._exit(1)
        if then is not None:
            then()

    return preexec


def become_subreaper() -> bool:
    """On Linux, orphaned descendants of this process become its children (not init's)."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    return False
