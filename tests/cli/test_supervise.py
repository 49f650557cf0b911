"""The supervisor `mlops ui` runs its servers under, on a stand-in process tree (no Dagster):
a stop signal ends the child and every process it started, also one that ignores SIGINT and
SIGTERM, one orphaned when its parent exits, and one in a session of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from mlops_assets.cli.supervise import Supervisor

GRACE = 2.0

# The child: two grandchildren that ignore SIGINT and SIGTERM (one in the child's process
# group, one in a session of its own); SIGINT ends the child at once, orphaning both.
CHILD = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    stubborn = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")
    subprocess.Popen([sys.executable, "-c", stubborn])
    subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
    time.sleep(600)
    """
)

SUPERVISOR = textwrap.dedent(
    f"""
    import sys
    from mlops_assets.cli.supervise import Stop, Supervisor
    with Supervisor(grace=float(sys.argv[1])) as servers:
        try:
            servers.start("child", [sys.executable, "-c", {CHILD!r}])
            name, code = servers.watch()
        except Stop as stop:
            print("stopped by", stop, flush=True)
            raise SystemExit(0)
    print(name, "exited with", code, flush=True)
    raise SystemExit(3)
    """
)


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_leftovers(process: subprocess.Popen, tree: list[psutil.Process]) -> None:
    """A failed test leaves nothing running behind it."""
    if process.poll() is None:
        process.kill()
    for member in tree:
        if alive(member):
            member.kill()


def start(
    ignore_sigint: bool = False, grace: float = GRACE
) -> tuple[subprocess.Popen, list[psutil.Process]]:
    """The supervisor script, once its child has started both grandchildren."""

    def ignore() -> None:  # as a background job of a non-interactive shell starts it
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(grace)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=ignore if ignore_sigint else None,
    )
    deadline = time.monotonic() + 60
    while len(tree := psutil.Process(process.pid).children(recursive=True)) < 3:
        assert time.monotonic() < deadline and process.poll() is None, tree
        time.sleep(0.1)
    return process, tree


@pytest.mark.parametrize(
    ("signum", "ignore_sigint"),
    [
        (signal.SIGINT, False),  # Ctrl-C
        (signal.SIGTERM, False),
        (signal.SIGHUP, False),
        (signal.SIGINT, True),
        (signal.SIGQUIT, False),  # Ctrl-\: reaches only `mlops ui`, not its servers' sessions
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP", "SIGINT-started-ignored", "SIGQUIT"],
)
def test_a_stop_signal_ends_the_whole_tree_within_the_grace_period(signum, ignore_sigint):
    process, tree = start(ignore_sigint)
    try:
        sent = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=GRACE + 10) == 0
        while any(map(alive, tree)) and time.monotonic() < sent + GRACE + 5:
            time.sleep(0.1)
        assert not [p.pid for p in tree if alive(p)]
        assert time.monotonic() - sent < GRACE + 5
        assert process.stdout.read().strip() == f"stopped by {signal.Signals(signum).name}"
    finally:
        kill_leftovers(process, tree)


def test_a_child_that_exits_on_its_own_is_reported_and_its_tree_stopped():
    process, tree = start()
    try:
        (child,) = psutil.Process(process.pid).children()
        child.send_signal(signal.SIGINT)  # the child only: as if `dg dev` had crashed
        assert process.wait(timeout=GRACE + 10) == 3
        assert not [p.pid for p in tree if alive(p)]
        assert process.stdout.read().strip() == "child exited with -2"  # killed by its SIGINT
    finally:
        kill_leftovers(process, tree)


def test_a_second_signal_skips_the_rest_of_the_grace_period():
    process, tree = start(grace=60)
    try:
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        time.sleep(1)
        process.send_signal(signal.SIGINT)  # Ctrl-C again: kill what is left now
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - sent < 15
        assert not [p.pid for p in tree if alive(p)]
    finally:
        kill_leftovers(process, tree)


def test_a_child_that_exited_keeps_its_pid_until_its_group_was_killed():
    """Reaping a child frees its pid, the id of its process group: a process started later may
    get it, and a SIGKILL to that group would reach it. The child stays a zombie until stop."""
    with Supervisor(grace=1) as servers:
        child = servers.start("child", [sys.executable, "-c", "raise SystemExit(5)"])
        assert servers.watch() == ("child", 5)
        assert psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE  # not reaped yet
    assert child.returncode == 5
    assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).ppid() != os.getpid()


def test_the_servers_are_stopped_when_the_supervisor_is_killed():
    """`kill -9` of `mlops ui` reaches no handler of its own: the kernel sends each child the
    SIGINT the supervisor would have sent (the stand-in child stops at once; `dg dev` stops
    its servers on it)."""
    process, tree = start()
    try:
        [child] = psutil.Process(process.pid).children()
        process.kill()
        assert process.wait(timeout=10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(child)
    finally:
        kill_leftovers(process, tree)


def test_a_child_keeps_the_callers_own_preexec_and_has_sigint_as_its_death_signal():
    """The death signal is set before the caller's ``preexec_fn``, which still runs."""
    probe = (
        "import ctypes, os; value = ctypes.c_int(); "
        "ctypes.CDLL(None).prctl(2, ctypes.byref(value), 0, 0, 0); "  # PR_GET_PDEATHSIG
        "print(value.value, os.environ.get('MLOPS_TEST_MARK'))"
    )
    process = Supervisor().start(
        "probe",
        [sys.executable, "-c", probe],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.putenv("MLOPS_TEST_MARK", "set by the caller"),
    )
    out, _ = process.communicate(timeout=30)
    assert out.split(" ", 1) == [str(int(signal.SIGINT)), "set by the caller\n"]
