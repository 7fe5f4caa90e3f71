"""Numbering repeats of a key over a stream of any length, in a fixed amount of memory.

A final result's row keys give the n-th repeat of a device a ~n suffix, so every key must be checked against
all the devices before it. A dict of them grows with the batch (about 200 bytes a device); Occurrences keeps
them in a temporary SQLite database on disk instead (SQLite's own page cache bounds its memory) and answers a
page of keys at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")
PAGE_KEYS = 1000
_QUERY_KEYS = 500  # bound variables per lookup, under SQLite's historical limit of 999
_CACHE_KIB = 2048


class Occurrences:
    """For each key, which occurrence of it this is (1 for the first), counting every key numbered before."""

    def __init__(self) -> None:
        # An empty name is a private temporary database on disk, deleted when it is closed.
        self._db = sqlite3.connect("", isolation_level=None)
        self._db.execute(f"PRAGMA cache_size = -{_CACHE_KIB}")
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("CREATE TABLE seen (key BLOB PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID")

    def number(self, keys: Sequence[str]) -> list[int]:
        encoded = [key.encode("utf-8", "surrogatepass") for key in keys]  # any str, lone surrogates included
        counts: dict[bytes, int] = {}
        for group in pages(set(encoded), _QUERY_KEYS):
            marks = ",".join("?" * len(group))
            counts.update(self._db.execute(f"SELECT key, n FROM seen WHERE key IN ({marks})", group))
        numbers = []
        for key in encoded:
            counts[key] = counts.get(key, 0) + 1
            numbers.append(counts[key])
        self._db.execute("BEGIN")
        self._db.executemany("INSERT OR REPLACE INTO seen (key, n) VALUES (?, ?)", counts.items())
        self._db.execute("COMMIT")
        return numbers

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Occurrences:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def numbered(keys: Iterable[str]) -> Iterator[tuple[str, int]]:
    """Each key with its occurrence number, a page at a time."""
    with Occurrences() as occurrences:
        for page in pages(keys, PAGE_KEYS):
            yield from zip(page, occurrences.number(page), strict=True)


def pages(items: Iterable[T], size: int) -> Iterator[tuple[T, ...]]:
    iterator = iter(items)
    while page := tuple(islice(iterator, size)):
        yield page
