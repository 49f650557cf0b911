"""On AMD Zen 4, numpy's AVX-512 sort is six times slower than its AVX2 sort: every `mlops`
command keeps numpy off AVX-512 there (before numpy loads), and nowhere else, and never
against the user's own NPY_DISABLE_CPU_FEATURES."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mlops_assets.cli import app, common

FLAGS = "fpu sse2 avx2 avx512f avx512dq avx512bw"
ZEN4 = f"processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nflags\t\t: {FLAGS}\n\nprocessor\t: 1\n"  # noqa: E501
ZEN3 = ZEN4.replace(" avx512f avx512dq avx512bw", "")
ZEN5 = ZEN4.replace("cpu family\t: 25", "cpu family\t: 26")
INTEL = ZEN4.replace("AuthenticAMD", "GenuineIntel").replace(": 25", ": 6")


def test_only_zen4_is_recognised():
    assert common.is_zen4(ZEN4)
    assert not any(common.is_zen4(text) for text in (ZEN3, ZEN5, INTEL, ""))


def setting_after(cpuinfo: str, env: dict[str, str]) -> str:
    """NPY_DISABLE_CPU_FEATURES after prefer_fast_sort in a fresh interpreter, and whether
    numpy then sorts (it refuses a feature name it does not know only with a warning)."""
    code = (
        "import os, sys\n"
        "from mlops_assets.cli.common import prefer_fast_sort\n"
        f"prefer_fast_sort({cpuinfo!r})\n"
        "import numpy\n"
        "assert (numpy.sort(numpy.array([3.0, 1.0, 2.0])) == [1, 2, 3]).all()\n"
        "print(os.environ.get('NPY_DISABLE_CPU_FEATURES', '-'))\n"
    )
    environment = {k: v for k, v in os.environ.items() if k != "NPY_DISABLE_CPU_FEATURES"}
    run = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env={**environment, **env},
        check=True,
    )
    return run.stdout.strip()


@pytest.mark.parametrize(
    ("cpuinfo", "env", "expected"),
    [
        (ZEN4, {}, common.SLOW_SORT),
        (INTEL, {}, "-"),
        (ZEN5, {}, "-"),
        (ZEN4, {"NPY_DISABLE_CPU_FEATURES": "AVX512_SPR"}, "AVX512_SPR"),  # the user's choice
    ],
)
def test_numpy_is_kept_off_avx512_on_zen4_only(cpuinfo, env, expected):
    assert setting_after(cpuinfo, env) == expected


def test_every_command_prefers_the_fast_sort_before_it_runs(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(common, "prefer_fast_sort", lambda: calls.append(True))
    missing = str(tmp_path / "missing.parquet")
    result = CliRunner().invoke(app, ["drift", missing, missing])
    assert result.exit_code == 2 and calls == [True]
