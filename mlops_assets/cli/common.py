"""What every command shares: the consoles, how a refusal is said and ends the command, the
keyring with a warehouse connection, and numpy's sort kept fast. Cheap to import: heavy modules
load inside the functions."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from mlops_assets.text import printable_lines

if TYPE_CHECKING:
    import duckdb

    from mlops_assets.security.keyring import Keyring
    from mlops_assets.settings import Settings

# Everything printed is text: names, values, paths and arguments are data, so Rich never reads
# them as markup (`[/b]` would crash, `[link=…]` would become a hyperlink) nor highlights them.
# Colour is given as a style (`style=`, `Text.assemble`), never written into the text.
# Messages are not wrapped: a path broken across lines cannot be copied.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)
out = Console(markup=False, highlight=False)  # stdout: tables a person reads

# True when the command runs as the `mlops` console script (``cli.main``): its process ends with
# it. False when a caller goes on after it (typer's CliRunner in a test).
ends_with_command = False


def say(label: str, style: str, message: str) -> None:
    """``label`` in ``style``, then ``message``."""
    console.print(Text.assemble((label, style), " ", message))


def fail(error: Exception, code: int = 1, label: str = "error:") -> NoReturn:
    """Say ``error`` and end the command with ``code``. An error may quote a path or an
    argument: its control characters are shown escaped."""
    say(label, "red", printable_lines(str(error)))
    raise typer.Exit(code)


@contextmanager
def failing(*errors: type[Exception], code: int = 1, label: str = "error:") -> Iterator[None]:
    """An error of these types raised inside ends the command with its message and ``code``."""
    try:
        yield
    except errors as error:
        fail(error, code, label)


def refusals() -> tuple[type[Exception], ...]:
    """What the keys and pii commands refuse with a message (exit 1) rather than a traceback:
    the keyring, the vault, or a home without a warehouse (nothing is created there)."""
    from mlops_assets.security.keyring import KeyringError
    from mlops_assets.security.vault import VaultError
    from mlops_assets.warehouse import WarehouseMissingError

    return KeyringError, VaultError, WarehouseMissingError


def settings() -> Settings:
    """The home this command works on ($MLOPS_HOME and friends)."""
    from mlops_assets.settings import get_settings

    return get_settings()


def load_keyring(home: Settings) -> Keyring:
    """The home's keyring; a lost one of a warehouse built with it is to be restored (said so),
    never replaced."""
    from mlops_assets.security.keyring import Keyring
    from mlops_assets.security.vault import refuse_lost_keyring

    refuse_lost_keyring(home.keyring_path, home.warehouse_path)
    return Keyring.load(home.keyring_path)


@contextmanager
def vault(home: Settings) -> Iterator[tuple[Keyring, duckdb.DuckDBPyConnection]]:
    """The keyring and a connection to the home's warehouse (which must exist). A refusal of
    either, or of the vault inside, ends the command with its message (exit 1)."""
    from mlops_assets.warehouse import connection

    with failing(*refusals()):
        keyring = load_keyring(home)
        with connection(home.warehouse_path, memory_limit=home.duckdb_memory_limit) as con:
            yield keyring, con


# numpy sorts with x86-simd-sort, whose AVX-512 kernels write with the memory form of
# VPCOMPRESS. AMD's Zen 4 runs that form in microcode (~140 cycles; AMD's optimisation guide
# says to avoid it), so there np.sort takes 52 ms for a million floats where numpy's AVX2
# kernels take 9 ms (numpy/x86-simd-sort#6). Sorting is most of `mlops drift`'s work.
SLOW_SORT = "X86_V4"  # numpy >= 2.4's name for its AVX-512 level


def prefer_fast_sort(cpuinfo: str | None = None) -> None:
    """On a Zen 4 CPU, keep numpy off its AVX-512 kernels in this process (and the processes it
    starts), unless NPY_DISABLE_CPU_FEATURES says otherwise already. Works only before numpy
    is imported; numpy's other kernels then use AVX2 too."""
    if "NPY_DISABLE_CPU_FEATURES" in os.environ or "numpy" in sys.modules:
        return
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as file:
                cpuinfo = file.read(16384)  # the first processor is enough
        except OSError:  # not Linux
            return
    if is_zen4(cpuinfo) and numpy_names_avx512_x86_v4():
        os.environ["NPY_DISABLE_CPU_FEATURES"] = SLOW_SORT


def is_zen4(cpuinfo: str) -> bool:
    """AMD family 25 (0x19: Zen 3 and 4) with AVX-512 (Zen 4 only); Zen 5 is family 26."""
    first = cpuinfo.split("\n\n", 1)[0]
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in first.splitlines())
    )
    return (
        fields.get("vendor_id") == "AuthenticAMD"
        and fields.get("cpu family") == "25"
        and "avx512f" in fields.get("flags", "").split()
    )


def numpy_names_avx512_x86_v4() -> bool:
    """numpy 2.4 or later (earlier ones name the AVX-512 features otherwise, and warn about a
    name they do not dispatch)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        major, minor = (int(part) for part in version("numpy").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (2, 4)
