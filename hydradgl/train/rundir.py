"""Run directories: their safety (one training at a time, never two runs' files mixed in one folder) and
finding them again (a run, an ensemble's members, a folder of runs).

A new run refuses a folder that already holds a run's files unless asked to replace them
(``--overwrite``, which removes them first, so the new config.yaml never sits beside the old run's
checkpoints); ``--resume`` continues the run that is there. The lock is an ``flock`` on ``.lock``
inside the folder: the kernel drops it when its process dies, so a killed run never leaves a stale lock.

An ensemble directory holds ``member-0/ ... member-{N-1}/`` (ordinary run directories) and
``ensemble.json`` (the manifest: members, seeds, bootstrap). An experiment directory of one head set
(``runs/experiment/HCM/seed-*``) or any folder of run directories also loads as an ensemble.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hydradgl.atomic import atomic_write_text, remove_stale_temporaries
from hydradgl.errors import TrainingError

MIN_FREE_BYTES = 50 * 2**20
LOCK_NAME = ".lock"
MANIFEST = "ensemble.json"
MANIFEST_FORMAT = 1
RUN_FILES = ("config.yaml", "last.pt", "best.pt", "metrics.csv", "test_metrics.json", "run.log", "plots")


def check_output_dir(path: Path) -> None:
    """Fail before training when the run directory cannot be written or its disk is (nearly) full."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test.{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise TrainingError(f"{path}: output directory is not writable ({exc.strerror or exc})") from None
    free = shutil.disk_usage(path).free
    if free < MIN_FREE_BYTES:
        raise TrainingError(f"{path}: only {free / 2**20:.0f} MiB free on its disk; need at least "
                            f"{MIN_FREE_BYTES / 2**20:.0f} MiB for checkpoints and outputs")


@contextlib.contextmanager
def run_dir_lock(path: Path) -> Iterator[None]:
    """Hold the run directory for this process; TrainingError naming the holder if another one has it."""
    lock_path = Path(path) / LOCK_NAME
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise TrainingError(f"{path}: in use by another training ({holder}); wait for it to finish or "
                                "choose another run directory with -o") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def existing_run_files(path: Path) -> list[str]:
    return [name for name in RUN_FILES if (Path(path) / name).exists()]


def claim_run_dir(path: Path, overwrite: bool, resume: bool, log=lambda message: None) -> None:
    """Under the lock: refuse a folder holding another run (unless ``overwrite``: then clear its files),
    and remove temporaries that killed writers left there."""
    for stale in remove_stale_temporaries(path):
        log(f"removed {stale.name}, a temporary left by a killed run")
    if resume:
        return
    found = existing_run_files(path)
    if found and not overwrite:
        raise TrainingError(f"{path}: already holds a run ({', '.join(found)}); pass --overwrite to replace it, "
                            f"-o DIR to train into another folder, or --resume {path} to continue it")
    for name in found:
        target = Path(path) / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    if found:
        log(f"--overwrite: removed the previous run's {', '.join(found)} from {path}")


def is_run(path: Path) -> bool:
    """Whether ``path`` holds a trained run (a best.pt or last.pt checkpoint)."""
    return (path / "best.pt").is_file() or (path / "last.pt").is_file()


def member_dirs(path: Path) -> list[Path]:
    """The run directories ``path`` stands for: itself (a run), its manifest's members, or its run subfolders."""
    path = Path(path)
    if not path.exists():
        raise TrainingError(f"{path}: no such run or ensemble directory")
    if is_run(path):
        return [path]
    manifest = path / MANIFEST
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
            members = [path / m for m in meta["members"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise TrainingError(f"{manifest}: not a readable ensemble manifest ({exc})") from None
        if meta.get("format") != MANIFEST_FORMAT:
            raise TrainingError(f"{manifest}: ensemble manifest format {meta.get('format')} was written by another "
                                f"hydradgl version; this one reads format {MANIFEST_FORMAT}")
        missing = [str(m) for m in members if not is_run(m)]
        if missing:
            raise TrainingError(f"{manifest}: member(s) {', '.join(missing)} have no best.pt or last.pt")
        return members
    subs = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    runs = [p for p in subs if is_run(p)]
    if runs:
        return runs
    nested = [p.name for p in subs if any(is_run(q) for q in p.iterdir() if q.is_dir())]
    if nested:
        raise TrainingError(f"{path}: holds several ensembles ({', '.join(nested)}); load one of them, "
                            f"e.g. {path / nested[0]}")
    raise TrainingError(f"{path}: not a hydradgl run directory (no best.pt or last.pt), ensemble ({MANIFEST}) "
                        "or folder of runs")


def write_manifest(root: Path, members: list[str], seeds: list[int], bootstrap: bool) -> None:
    """``root/ensemble.json``: the members (folder names under ``root``), their seeds, whether bootstrapped."""
    manifest = {"format": MANIFEST_FORMAT, "members": members, "seeds": seeds, "bootstrap": bootstrap}
    atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
