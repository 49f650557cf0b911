"""Compile the virtualenv's modules to bytecode, the packages' own test suites excepted.

    python tools/compile_bytecode.py [--site-packages] [FOLDER ...]

`make install` runs it with the virtualenv's Python after `uv sync`: where Python may not write
its bytecode cache (``PYTHONDONTWRITEBYTECODE``, as many containers and CI machines set, or a
read-only tree), every process of a run would otherwise compile Dagster, dbt and scikit-learn
from source again. It compiles every module of each FOLDER given, and of that Python's
site-packages with ``--site-packages``, except those under a folder named ``tests``: the test
suites pandas, SciPy, scikit-learn, NumPy and the others ship, a quarter of the files and
about half the compiling time. Nothing here imports them but the empty ``__init__.py`` of
scikit-learn's, which its listing of estimators walks (uv's ``--compile-bytecode`` compiles them
all, with no way to leave them out).

The bytecode is what Python writes itself when it may: checked against the source's
modification time and size (not a hash, even with ``SOURCE_DATE_EPOCH`` set). A module whose
bytecode is current is skipped, so an install that changed nothing costs a fraction of a second.
A file that cannot be compiled or whose bytecode cannot be written is counted, not an error:
bytecode only spares an import its compiling.
"""

from __future__ import annotations

import importlib.util
import os
import py_compile
import struct
import sys
import sysconfig
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor

# Folders never compiled: the packages' test suites, and the bytecode caches themselves.
SKIPPED_FOLDERS = frozenset({"tests", "__pycache__"})
CHUNK = 200  # modules handed to a worker process at a time


def sources(roots: Iterable[str]) -> Iterator[str]:
    """Every ``.py`` file under ``roots`` but those in :data:`SKIPPED_FOLDERS` (symbolic links
    to folders are not followed)."""
    for root in roots:
        for folder, folders, files in os.walk(root):
            folders[:] = sorted(f for f in folders if f not in SKIPPED_FOLDERS)
            yield from (os.path.join(folder, f) for f in sorted(files) if f.endswith(".py"))


def _header(source: os.stat_result) -> bytes:
    """The header of a current cache of a module with this source file (PEP 552, checked by
    modification time and size)."""
    fields = (0, int(source.st_mtime) & 0xFFFF_FFFF, source.st_size & 0xFFFF_FFFF)
    return importlib.util.MAGIC_NUMBER + struct.pack("<III", *fields)


def compile_module(path: str) -> bool:
    """Compile ``path`` to where the import system looks for its bytecode, unless the bytecode
    there is current: False when it cannot be compiled (not Python, unreadable)."""
    cache = importlib.util.cache_from_source(path)
    try:
        with open(cache, "rb") as cached:
            if cached.read(16) == _header(os.stat(path)):
                return True
    except OSError:  # no cache yet
        pass
    try:
        py_compile.compile(
            path,
            cfile=cache,
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        )
    except (py_compile.PyCompileError, OSError, ValueError):
        return False
    return True


def compile_modules(roots: Iterable[str], workers: int | None = None) -> tuple[int, int]:
    """Compile :func:`sources` of ``roots`` on ``workers`` processes (default: one per core;
    1: in this process): (modules whose bytecode is current, modules that could not be
    compiled)."""
    files = list(sources(roots))
    if workers == 1:
        failed = sum(not compile_module(f) for f in files)
    else:
        with ProcessPoolExecutor(workers) as pool:
            failed = sum(not ok for ok in pool.map(compile_module, files, chunksize=CHUNK))
    return len(files) - failed, failed


def main(arguments: list[str]) -> None:
    folders = [a for a in arguments if a != "--site-packages"]
    if "--site-packages" in arguments:  # once, where platlib is a link to purelib (lib64)
        paths = sysconfig.get_paths()
        folders += sorted({os.path.realpath(paths[kind]) for kind in ("purelib", "platlib")})
    current, failed = compile_modules(folders)
    print(f"bytecode: {current} modules current, {failed} not compilable, test suites left out")


if __name__ == "__main__":
    main(sys.argv[1:])
