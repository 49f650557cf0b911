"""`dbt parse`, started before anything heavy is imported: it runs in its own process while
`mlops run` imports Dagster, dbt's adapter and the rest (this module imports neither)."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path

from mlops_assets.settings import DBT_PROJECT_DIR

# Where Dagster loads the dbt assets from: the platform's own target directory, which a
# `dbt build` run from the CLI (it writes target/) never touches mid-read.
TARGET_PATH = Path("target") / "dagster"  # relative to the dbt project, as DbtProject wants it
MANIFEST = DBT_PROJECT_DIR / TARGET_PATH / "manifest.json"
# dbt's partial-parse state, kept next to the manifest: a parse reads only changed files.
_KEPT = ("partial_parse.msgpack", "manifest.json")
# Beside the manifest, what the parse that published it read: see manifest_is_current.
INPUTS_RECORD = "manifest.inputs.json"
# Beside the partial-parse state a parse left for a build, what that parse was for: see
# build_state_is_current.
BUILD_STATE_RECORD = "partial_parse.inputs.json"
# The project's own output and installed packages: not inputs of a parse.
NOT_INPUTS = frozenset({"target", "logs", "dbt_packages"})
STALE_SECONDS = 3600  # a private parse directory this old belongs to no running parse
ANSI_CODES = re.compile(r"\x1b\[[0-9;]*m")  # dbt colours some lines even when not on a terminal


VENV_DBT = Path(sys.executable).parent / "dbt"  # the dbt-core installed with this Python
# The variables profiles.yml renders: a parse opens no connection, yet dbt hashes the rendered
# profile and parses every file again when it changed. Without them the profile a parse sees
# is the same whatever the home, so a parse for a new home reads only changed files.
PROFILE_VARIABLES = ("MLOPS_HOME", "MLOPS_DUCKDB_MEMORY_LIMIT", "MLOPS_DBT_CONNECT_ATTEMPTS")


def parse_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the variables the profile renders (:data:`PROFILE_VARIABLES`)."""
    return {k: v for k, v in environ.items() if k not in PROFILE_VARIABLES}


def build_vars(warehouse_path: str, memory_limit: str) -> str:
    """The ``--vars`` of the platform's `dbt build`: the warehouse file and its memory limit,
    which profiles.yml renders."""
    return json.dumps({"warehouse_path": warehouse_path, "memory_limit": memory_limit})


def dbt_executable() -> str:
    """The dbt installed next to this Python (the project's venv), else whatever is on PATH."""
    return str(VENV_DBT) if VENV_DBT.exists() else "dbt"


def project_digest() -> str:
    """SHA-256 of what a parse reads: every file of the dbt project (its own output, installed
    packages and hidden files aside), by relative path and content, and the versions of dbt
    and of its DuckDB adapter (whose macros the manifest holds). Anything but a regular file
    (a FIFO, a dangling link) counts by its name alone, unread."""
    versions = "\0".join(metadata.version(package) for package in ("dbt-core", "dbt-duckdb"))
    digest = hashlib.sha256(os.fsencode(f"{dbt_executable()}\0{versions}\0"))
    for folder, subfolders, files in os.walk(DBT_PROJECT_DIR):
        top = Path(folder) == DBT_PROJECT_DIR
        subfolders[:] = sorted(
            name
            for name in subfolders
            if not name.startswith(".") and not (top and name in NOT_INPUTS)
        )
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(folder, name)
            relative = os.fsencode(path.relative_to(DBT_PROJECT_DIR).as_posix())
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError:  # a dangling link
                regular = False
            content = path.read_bytes() if regular else b""
            digest.update(b"%s\0%d\0%d\0" % (relative, regular, len(content)) + content)
    return digest.hexdigest()


def _identity(path: Path) -> list[int]:
    """Which file ``path`` is: a manifest published later is another file (os.replace)."""
    status = path.stat()
    return [status.st_ino, status.st_size, status.st_mtime_ns]


def _read_record(path: Path):
    """The JSON in the regular file ``path``: OSError for anything else (opened without
    blocking: a FIFO put there must not hang the run), ValueError for what is not JSON."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(descriptor, "rb") as file:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        try:
            return json.loads(file.read(1_000_000))
        except RecursionError as error:  # nested too deep for the parser
            raise ValueError(f"{path.name} is not a record") from error


@contextlib.contextmanager
def _private_file(folder: Path, name: str) -> Iterator[Path]:
    """A new empty file in ``folder``, made by this process alone (not a name someone could
    have put a link or a FIFO at), to be renamed over ``name``; removed if it is still there."""
    descriptor, path = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
    os.close(descriptor)
    try:
        yield Path(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def manifest_is_current(inputs: str | None = None) -> bool:
    """Whether the published manifest was parsed from the project's files as they are now:
    the parse that published it recorded the project's digest (taken before dbt started) and
    the manifest file it published; another parse's manifest, or an edited file, says no.
    ``inputs``: the project's digest, when the caller has just taken it."""
    try:
        record = _read_record(MANIFEST.parent / INPUTS_RECORD)
        current = {"inputs": inputs or project_digest(), "manifest": _identity(MANIFEST)}
        return record == current
    except (OSError, ValueError):
        return False


def _build_state_record(
    inputs: str, build_vars: str, environ: Mapping[str, str], state: Path
) -> dict:
    """What the partial-parse state file ``state`` was parsed for besides the project's files:
    the build's vars, and a digest of the variables the profile renders and of dbt's own
    (DBT_*, such as DBT_PARTIAL_PARSE; a digest, as DBT_ENV_SECRET_* values are secrets); and
    which file it is (dbt rewrites the state only when it parsed something again: a build
    from it that found nothing changed leaves it as it was)."""
    variables = sorted(
        (name, value)
        for name, value in environ.items()
        if name in PROFILE_VARIABLES or name.startswith("DBT_")
    )
    environment = hashlib.sha256(json.dumps(variables).encode()).hexdigest()
    return {
        "inputs": inputs,
        "vars": build_vars,
        "environment": environment,
        "state": _identity(state),
    }


def build_state_is_current(environ: Mapping[str, str], for_build: tuple[str, Path]) -> bool:
    """Whether `mlops run` can go without its parse (see :class:`DbtParse`): the published
    manifest is current, and the build's target directory holds the partial-parse state file
    that a parse for the same project files, the same ``--vars`` and the same profile and dbt
    variables left there (the case of every run after the first in a home whose dbt project is
    unchanged).

    Only a shortcut: dbt checks its partial-parse state itself and parses every file again
    when the state does not fit, at the cost of that parse on the build's path."""
    build_vars, target = for_build
    try:
        record = _read_record(target / BUILD_STATE_RECORD)
        inputs = project_digest()
        expected = _build_state_record(inputs, build_vars, environ, target / _KEPT[0])
    except (OSError, ValueError):
        return False
    return record == expected and manifest_is_current(inputs)


class DbtParseError(RuntimeError):
    """`dbt parse` failed: the project's SQL or YAML has an error (dbt's message included)."""


class DbtParse:
    """`dbt parse` running in its own process, so that the manifest matches the SQL on disk
    (`dagster dev` does this itself). Plain dbt, not DbtCliResource.cli: that would first set
    up a dbt adapter in this process (~3 s), which a parse does not need.

    dbt writes its manifest in place, so each parse writes into a private directory and the
    result replaces the published manifest in one rename: a code location loading it, or
    another `mlops run` parsing at the same time, never reads half a file.

    ``environ``: the environment dbt runs in (the entry point's), less the variables the
    profile renders (:func:`parse_environment`).

    ``for_build``: the ``--vars`` (:func:`build_vars`) of the build that is to follow and its
    target directory, as `mlops run` knows them. The parse then renders the profile exactly as
    that build will, in the whole ``environ``, and leaves its partial-parse state in the build's
    target directory too: the build's dbt reads only changed files instead of parsing every
    file again on the run's critical path, while this parse overlaps the run's start-up. (The
    state published next to the manifest is shared by every home and every parse of this
    checkout, so it cannot serve as the build's.) Beside that state goes a record of what it
    was parsed for, so that the next run in the same home, the project unchanged, needs no
    parse at all (:func:`build_state_is_current`)."""

    def __init__(
        self, environ: Mapping[str, str], for_build: tuple[str, Path] | None = None
    ) -> None:
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        for stale in MANIFEST.parent.glob(".parse-*"):  # left by a killed process
            if time.time() - stale.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(stale, ignore_errors=True)
        self._private = Path(tempfile.mkdtemp(prefix=".parse-", dir=MANIFEST.parent))
        try:  # before dbt reads the files: an edit after this shows
            self._inputs: str | None = project_digest()
        except OSError:  # a file dbt will say it cannot read: no record, never current
            self._inputs = None
        state = MANIFEST.parent / _KEPT[0]
        if state.exists():
            shutil.copy2(state, self._private / state.name)
        self._for_build = for_build
        self._environ = dict(environ)
        if for_build is not None:  # the state there is about to be replaced, or left stale
            with contextlib.suppress(OSError):  # none yet, or not a file (said stale anyway)
                (for_build[1] / BUILD_STATE_RECORD).unlink()
        self._published = False
        build_options = [] if for_build is None else ["--vars", for_build[0]]
        self._process = subprocess.Popen(
            [
                dbt_executable(),
                "parse",
                "--quiet",
                "--project-dir",
                str(DBT_PROJECT_DIR),
                "--profiles-dir",
                str(DBT_PROJECT_DIR),
                "--target-path",
                str(self._private),
                *build_options,
            ],
            cwd=DBT_PROJECT_DIR,
            env=parse_environment(environ) if for_build is None else dict(environ),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def wait(self) -> Path:
        """The published manifest, once this parse has published it (again: at once)."""
        if self._published:
            return MANIFEST
        try:
            output, _ = self._process.communicate()
            if self._process.returncode != 0:
                message = ANSI_CODES.sub("", output).strip()[-2000:]
                raise DbtParseError(
                    f"dbt parse failed (exit {self._process.returncode}): {message}"
                )
            state = self._private / _KEPT[0]
            if self._for_build is not None and state.exists():
                self._leave_build_state(state, *self._for_build)
            record = self._private / INPUTS_RECORD
            if self._inputs is not None:
                manifest = _identity(self._private / _KEPT[1])
                record.write_text(json.dumps({"inputs": self._inputs, "manifest": manifest}))
            for name in _KEPT:  # the manifest last: whoever sees it sees its state too
                # (no partial-parse state when DBT_PARTIAL_PARSE=false; a manifest always)
                if name == MANIFEST.name or (self._private / name).exists():
                    os.replace(self._private / name, MANIFEST.parent / name)
            # After the manifest: a record names the manifest file it vouches for, so a record
            # that lands after another parse's manifest vouches for nothing.
            if self._inputs is not None:
                os.replace(record, MANIFEST.parent / INPUTS_RECORD)
            self._published = True
        finally:
            shutil.rmtree(self._private, ignore_errors=True)
        return MANIFEST

    def _leave_build_state(self, state: Path, build_vars: str, target: Path) -> None:
        """Copy the partial-parse state into the build's target directory, then the record of
        what it was parsed for (:func:`build_state_is_current`), each in one rename of a file
        only this process could have made."""
        target.mkdir(parents=True, exist_ok=True)
        placed = target / state.name
        with _private_file(target, state.name) as copied:
            shutil.copy2(state, copied)
            os.replace(copied, placed)
        if self._inputs is None:  # the project could not be read: vouch for nothing
            return
        made = _build_state_record(self._inputs, build_vars, self._environ, placed)
        with _private_file(target, BUILD_STATE_RECORD) as record:
            record.write_text(json.dumps(made))
            with contextlib.suppress(IsADirectoryError):  # a folder put there: no record
                os.replace(record, target / BUILD_STATE_RECORD)

    def cancel(self) -> None:
        """Stop the parse unless it has finished, and remove its private directory."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.communicate()
        shutil.rmtree(self._private, ignore_errors=True)


def prepare_dbt_manifest(environ: Mapping[str, str], *, if_changed: bool = False) -> Path:
    """Run `dbt parse` (in ``environ``) and wait for it: the manifest Dagster loads the dbt
    assets from. ``if_changed``: only when the published manifest is not current
    (:func:`manifest_is_current`)."""
    if if_changed and manifest_is_current():
        return MANIFEST
    return DbtParse(environ).wait()
