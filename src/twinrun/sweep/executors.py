"""Where a sweep's runs go: any ``concurrent.futures.Executor`` — a local thread pool (each run is its
own process anyway), a local Dask cluster, or an existing one (``Client.get_executor()``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor

from .._errors import FrameworkMissingError, UsageError

__all__ = ["open_executor"]


@contextlib.contextmanager
def open_executor(executor: str | Executor | None = None, *, workers: int = 1,
                  dask_timeout: float = 10.0) -> Iterator[Executor]:
    """An ``Executor`` for ``executor``: None/"local" (a local pool of ``workers``), "dask-local"
    (a ``LocalCluster`` of ``workers`` processes, at least 2), "dask://HOST:PORT" (an existing
    cluster), or an ``Executor`` object, used as is."""
    if isinstance(executor, Executor):
        yield executor
        return
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    spec = (executor or "local").strip()
    if spec == "local":
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="twinrun-sweep")
        try:
            yield pool
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return
    if spec != "dask-local" and not spec.startswith(("dask://", "tcp://")):
        raise UsageError(f"unknown executor {spec!r}; use local, dask-local or dask://HOST:PORT")
    try:
        import distributed
    except ImportError:
        raise FrameworkMissingError("--executor dask needs dask.distributed; install it with: "
                                    "pip install 'twinrun[dask]'") from None
    import logging

    cluster = None
    if spec == "dask-local":
        cluster = distributed.LocalCluster(n_workers=max(workers, 2), threads_per_worker=1, processes=True,
                                           dashboard_address=None, silence_logs=logging.ERROR)
        address = cluster.scheduler_address
    else:
        address = "tcp://" + spec.split("://", 1)[1]
    try:
        try:
            client = distributed.Client(address, timeout=dask_timeout, set_as_default=False)
        except (OSError, TimeoutError) as e:
            raise UsageError(f"cannot reach the Dask scheduler at {address} within {dask_timeout:g} s "
                             f"({type(e).__name__}); start one (dask scheduler) and its workers, "
                             "or use --executor dask-local") from None
        try:
            yield client.get_executor(pure=False)
        finally:
            client.close()
    finally:
        if cluster is not None:
            cluster.close()


