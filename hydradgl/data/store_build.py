"""Building a processed cache: structures packed into graphs a chunk at a time (in worker processes
with ``workers > 1``) and streamed into a :class:`~hydradgl.data.store.StoreWriter`, so neither the
graphs nor their arrays are ever all in memory."""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import TypeVar

from hydradgl.data.graphset import GraphSet
from hydradgl.data.records import TargetInfo
from hydradgl.data.store import Store, StoreWriter, open_store

T = TypeVar("T")


def memory_available() -> int | None:
    """Bytes of memory the system can still give processes (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of up to ``size`` consecutive items (the last may be shorter)."""
    it = iter(items)
    return iter(lambda: list(islice(it, size)), [])


def packed_chunks(structures: Iterable[T], pack: Callable[[list[T]], GraphSet], chunk_size: int = 1024,
                  workers: int = 1) -> Iterator[GraphSet]:
    """``pack`` applied to consecutive chunks of ``structures``, in order; with ``workers > 1`` in that
    many processes, at most two chunks per worker in flight (memory stays bounded)."""
    if workers <= 1:
        yield from map(pack, chunked(structures, chunk_size))
        return
    with multiprocessing.get_context().Pool(workers) as pool:
        pending: deque = deque()
        for chunk in chunked(structures, chunk_size):
            pending.append(pool.apply_async(pack, (chunk,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def build_store(folder: Path, chunks: Iterable[GraphSet], targets: dict[str, TargetInfo],
                node_inputs: dict[str, int], log: Callable[[], list[str]] | list[str]) -> Store:
    """Write ``chunks`` of packed graphs as the cache folder ``folder`` and open it.

    ``log`` (the build's notes, kept in the manifest) may be a callable, evaluated after the chunks are
    consumed, for notes that only exist once the structures have been read.
    """
    writer = StoreWriter(folder, targets, node_inputs)
    try:
        for chunk in chunks:
            writer.append(chunk)
        writer.finish(log() if callable(log) else log)
    except BaseException:
        writer.abort()
        raise
    opened = open_store(folder)
    if isinstance(opened, str):
        raise OSError(f"{folder}: the cache just written is {opened}")
    return opened
