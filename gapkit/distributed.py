"""Scale-out on Dask: blocks of structures on workers, R factors reduced as a tree.

Needs ``dask[distributed]`` (the ``dask`` extra). ``scheduler="local"`` starts
a :class:`~dask.distributed.LocalCluster` on loopback for the duration of a
call; any other string is the address of a running scheduler
(``"tcp://host:8786"``), so the same call scales to a multi-node cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from .exceptions import InvalidParameterError
from .gp import StreamingQR

__all__ = ["dask_client", "map_ordered", "tree_reduce_qr"]


@contextmanager
def dask_client(scheduler: str, n_workers: int | None = None) -> Iterator:
    """A connected ``dask.distributed.Client`` for the duration of a block."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError as err:
        raise InvalidParameterError(
            "scheduler= needs dask.distributed: pip install 'gapkit[dask]'."
        ) from err
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=n_workers or 2, threads_per_worker=1, processes=True,
            host="127.0.0.1", dashboard_address=None,
        )
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
            cluster.close()
    elif isinstance(scheduler, str):
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
    else:
        raise InvalidParameterError(
            f"scheduler must be 'local' or a scheduler address; got {scheduler!r}."
        )


def map_ordered(client, func: Callable, items: Sequence, *args) -> Iterator:
    """``func(item, *args)`` on the workers, results yielded in the order of ``items``."""
    shared = [client.scatter(a, broadcast=True, hash=False) for a in args]
    futures = [client.submit(func, item, *shared, pure=False) for item in items]
    for future in futures:
        yield future.result()
        future.release()


def _merge(a: StreamingQR, b: StreamingQR) -> StreamingQR:
    out = StreamingQR(a.n_columns)  # never change a task's input in place
    out.merge(a)
    out.merge(b)
    return out


def tree_reduce_qr(client, futures: list):
    """Merge R factors pairwise on the workers until one is left (TSQR)."""
    while len(futures) > 1:
        paired = [client.submit(_merge, futures[k], futures[k + 1], pure=False)
                  for k in range(0, len(futures) - 1, 2)]
        if len(futures) % 2:
            paired.append(futures[-1])
        futures = paired
    return futures[0]
