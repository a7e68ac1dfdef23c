"""The first stage's matrix products on one BLAS thread.

Why: OpenBLAS (NumPy's BLAS) keeps its worker threads spinning for a while after each call, and on a 2-core
CPU they then starve the model that runs next. Measured on the AMX machine (2026-12-02): a query encoding right
after an exact dense search over SciFact took 96 ms instead of 10. One thread costs 0.2 ms more on that
7.7k x 384 scan and leaves nothing spinning. threadpoolctl sets it around each product only (7 us a call), so
the rest of the user's process keeps its BLAS threads.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import cache


@cache
def _blas():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def one_thread() -> AbstractContextManager:
    """Within it, NumPy's BLAS runs on one thread."""
    return _blas().limit(limits=1)
