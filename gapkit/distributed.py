"""Scale-out on Dask: blocks of structures on workers, R factors reduced as a tree.

Needs ``dask[distributed]`` (the ``dask`` extra). ``scheduler="local"`` starts
a :class:`~dask.distributed.LocalCluster` on loopback for the duration of a
call; any other string is the address of a running scheduler
(``"tcp://host:8786"``), so the same call scales to a multi-node cluster.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from .exceptions import InvalidParameterError
from .gp import StreamingQR
from .rows import ROWS_PER_BLOCK, fold_rows, structure_rows

__all__ = ["dask_client", "map_ordered", "reduce_blocks_qr", "fold_rows_on_dask"]


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
            n_workers=n_workers or 2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # one thread per worker for the compiled loops too (numba ignores OMP_*)
            env={"NUMBA_NUM_THREADS": "1"},
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
    out = a.empty_like()  # never change a task's input in place
    out.merge(a)
    out.merge(b)
    return out


def reduce_blocks_qr(
    client, func: Callable, blocks: Iterable, *args, window: int = 4
) -> StreamingQR:
    """``func(block, *args)`` (a :class:`StreamingQR`) for every block on the
    workers, merged as a tree while the blocks come in.

    At most ``window`` blocks are in flight, and finished ones are merged at
    once like the digits of a binary counter (two partial results of the same
    level become one of the next), so the R factors held at any time number
    about ``window + log2(n_blocks)``, whatever the number of blocks: memory
    does not grow with the data set.
    """
    from dask.distributed import wait

    stack: list[tuple[int, object]] = []  # (level, future) of partial reductions
    in_flight: deque = deque()

    def push(future):
        level = 0
        while stack and stack[-1][0] == level:
            _, left = stack.pop()
            future = client.submit(_merge, left, future, pure=False)
            level += 1
        stack.append((level, future))

    for block in blocks:
        in_flight.append(client.submit(func, block, *args, pure=False))
        if len(in_flight) >= window:
            oldest = in_flight.popleft()
            wait(oldest)
            push(oldest)
    while in_flight:
        push(in_flight.popleft())
    if not stack:
        raise ValueError("reduce_blocks_qr: no blocks")
    result = stack.pop()[1]
    while stack:
        result = client.submit(_merge, stack.pop()[1], result, pure=False)
    return result.result()


def _block_solver(block, arrays) -> StreamingQR:
    """R factor of one block's weighted design-matrix rows (runs on a Dask worker),
    with the block's observation counts and noise in ``meta``."""
    import numpy as np

    from .backend import resolve_device

    descriptor, e0, q_sparse, z_sparse, delta, zeta, l_factor = arrays
    solver = StreamingQR(len(z_sparse), prior=l_factor, prior_rows=False)
    meta = {"energy": 0, "forces": 0, "virial": 0}
    items = []
    for atoms, labels, sig in block:
        rows = structure_rows(descriptor, atoms, labels, sig, e0, q_sparse, z_sparse, delta, zeta)
        items.append((rows.rows, rows.targets, rows.sigma))
        for key in ("energy", "forces", "virial"):
            meta[key] += rows.counts[key]
    # one fold per block
    n_data, sum_log = fold_rows(solver, items, resolve_device("cpu"), rows_per_block=np.inf)
    solver.meta = {**meta, "n_data": n_data, "sum_log_sigma": sum_log}
    return solver


def fold_rows_on_dask(
    client,
    solver: StreamingQR,
    frames,
    labels,
    noise,
    e0,
    descriptor,
    q_sparse,
    z_sparse,
    delta,
    zeta: int,
    l_factor,
) -> tuple[dict, int, float]:
    """Fold the rows of every structure into ``solver`` on Dask workers.

    Blocks of about ``ROWS_PER_BLOCK`` rows are turned into R factors on the
    workers and merged as a tree while they come in (memory independent of
    the number of blocks); the result equals the serial fold to rounding.

    Returns
    -------
    counts : dict
        Energy, force and virial observations.
    n_data : int
    sum_log_sigma : float
    """
    arrays = client.scatter(
        (descriptor, e0, q_sparse, z_sparse, delta, zeta, l_factor), broadcast=True, hash=False
    )

    def blocks():
        current, n_rows = [], 0
        for k, (atoms, lab) in enumerate(zip(frames, labels, strict=True)):
            current.append((atoms, lab, noise.sigmas(atoms, k)))
            n_rows += 1 + 3 * len(atoms) + 6
            if n_rows >= ROWS_PER_BLOCK:
                yield current
                current, n_rows = [], 0
        if current:
            yield current

    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    data = reduce_blocks_qr(client, _block_solver, blocks(), arrays, window=2 * n_workers)
    solver.merge(data)
    counts = {k: int(data.meta.get(k, 0)) for k in ("energy", "forces", "virial")}
    return counts, int(data.meta["n_data"]), float(data.meta["sum_log_sigma"])
