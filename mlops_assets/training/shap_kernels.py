"""shap's numba kernels, compiled once and kept on disk for the next process.

shap compiles its kernels on first use in every process (the run, each Dask worker computing
reason codes, each test worker) and never asks numba to cache them: about 11 s of CPU on this
machine before the first explanation. :func:`keep_compiled_kernels` asks numba to cache each
of them; numba then keeps the machine code beside shap's files (or in the user's cache folder
where those cannot be written), keyed by the source file, the numba version and the CPU.

One kernel cannot be cached that way: the permutation explainer's ``_build_fixed_single_output``
takes the output link, itself a compiled function, as an argument, and numba cannot match such
a signature in another process (it would compile it again and add a cache file each time). For
the link the platform uses, the identity, :func:`_identity_single_output` is the same loop with
the link left out, and it caches; any other link, or outputs of more than one column, still go
to shap's own kernel.

A cache that cannot be read or written (a full or read-only disk, a damaged file) means
compiling, as without a cache, never an error (:class:`_TolerantCache`). The cache files are
numba's pickles, trusted as the installed packages are: they live in the same folders (or the
user's own cache folder).
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
from types import ModuleType

import numpy as np
from numba import njit
from numba.core.dispatcher import Dispatcher

# shap's kernels that take another compiled function (the link) as an argument.
_NOT_CACHED = ("_build_fixed_single_output", "_build_fixed_multi_output")
_LOCK = threading.Lock()
_kept = False


class _TolerantCache:
    """numba's on-disk cache of one function, where a failure to read or write it means
    compiling, as without a cache, never an error."""

    def __init__(self, cache) -> None:
        self._cache = cache

    def load_overload(self, *args, **kwargs):
        try:
            return self._cache.load_overload(*args, **kwargs)
        except Exception:  # unreadable or damaged: a miss, so the function is compiled
            return None

    def save_overload(self, *args, **kwargs) -> None:
        with contextlib.suppress(Exception):
            self._cache.save_overload(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._cache, name)


@njit
def _identity_single_output(
    averaged_outs, last_outs, outputs, batch_positions, varying_rows, num_varying_rows
):
    """shap's ``_build_fixed_single_output`` (shap/utils/_masked_model.py, MIT licence) for
    the identity link without linearizing weights: each mask's mean output, carried over from
    the previous mask where this one's rows did not change."""
    sample_count = last_outs.shape[0]
    for i in range(len(averaged_outs)):
        if batch_positions[i] < batch_positions[i + 1]:
            if num_varying_rows[i] == sample_count:
                last_outs[:] = outputs[batch_positions[i] : batch_positions[i + 1]]
            else:
                last_outs[varying_rows[i]] = outputs[batch_positions[i] : batch_positions[i + 1]]
            averaged_outs[i] = np.mean(last_outs)
        else:
            averaged_outs[i] = averaged_outs[i - 1]


def _cache(function: Dispatcher) -> None:
    """Ask numba to keep ``function``'s compiled code on disk, where it can."""
    # nowhere to keep it (the package's folder and the user's cache read-only): numba says
    # so here, and the function is compiled as before
    with contextlib.suppress(RuntimeError):
        function.enable_caching()
        function._cache = _TolerantCache(function._cache)


def keep_compiled_kernels(shap: ModuleType) -> None:
    """Every compiled kernel of the imported ``shap`` cached on disk, and its permutation
    explainer's output step, for the identity link, done by the cached
    :func:`_identity_single_output`. Once per process."""
    global _kept
    with _LOCK:
        if _kept:
            return
        for name, module in list(sys.modules.items()):
            if name != "shap" and not name.startswith("shap."):
                continue
            for value in list(vars(module).values()):
                if isinstance(value, Dispatcher) and value.py_func.__name__ not in _NOT_CACHED:
                    _cache(value)
        _cache(_identity_single_output)
        masked_model = sys.modules["shap.utils._masked_model"]
        shaps_own = masked_model._build_fixed_output
        identity = shap.links.identity

        @functools.wraps(shaps_own)  # shap's own stays reachable as __wrapped__
        def build_fixed_output(
            averaged_outs, last_outs, outputs, batch_positions, varying_rows, num_varying_rows,
            link, linearizing_weights,
        ):  # fmt: skip
            arrays = (averaged_outs, last_outs, outputs)
            if (
                link is identity
                and linearizing_weights is None
                and last_outs.ndim == 1
                and all(a.dtype != np.float16 for a in arrays)
            ):
                _identity_single_output(*arrays, batch_positions, varying_rows, num_varying_rows)
            else:
                shaps_own(
                    *arrays, batch_positions, varying_rows, num_varying_rows, link,
                    linearizing_weights,
                )  # fmt: skip

        masked_model._build_fixed_output = build_fixed_output
        _kept = True
