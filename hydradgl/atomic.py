"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A crash or error mid-write leaves the previous file (or none), never a truncated file. Temporaries
are named ``<name>.<pid>.<random>.tmp``; one left behind by a killed process is removed by
:func:`remove_stale_temporaries` on the next run (only when its writer is gone, see there).
Files are created with the permissions the umask allows (like ``open``), not mkstemp's 0600, so a
shared cache stays readable by colleagues.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

STALE_SECONDS = 600  # a temporary untouched this long whose writer process is gone is litter
_TEMP_NAME = re.compile(r"^.+\.(\d+)\.[^.]+\.tmp$")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode ``open``/``mkdir`` would give a new file/folder under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def temp_prefix(path: Path) -> str:
    """``<name>.<pid>.``: the pid lets a later run tell a dead writer's temporary from a live one's."""
    return f"{Path(path).name}.{os.getpid()}."


@contextmanager
def atomic_open(path: Path, mode: str = "wb") -> Iterator[IO]:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as exc:  # name the file the user asked for, not our temporary
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_csv(path: Path, rows: list[dict]) -> None:
    """Rows (dicts sharing the first row's keys) as CSV with a header, written atomically; nothing for no rows.

    The one CSV writer of the project: metrics.csv, split.csv, predictions and per-structure errors."""
    if not rows:
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder: Path, now: float | None = None) -> list[Path]:
    """Remove ``*.<pid>.*.tmp`` files and folders in ``folder`` left by killed writers; return them.

    A temporary counts as stale only when its pid is not a live process here AND it has not been
    modified for :data:`STALE_SECONDS` (a writer on another host sharing the folder keeps touching
    its file), so a concurrent live writer's temporary is never removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or int(match.group(1)) == os.getpid() or _pid_alive(int(match.group(1))):
            continue
        try:
            if now - entry.lstat().st_mtime < STALE_SECONDS:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except OSError:  # gone already, or not ours to remove: leave it
            continue
        removed.append(entry)
    return removed
