"""Input files of a reader plugin: listing them with clear errors, fingerprinting them cheaply."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hydradgl.data.records import TargetInfo
from hydradgl.errors import DataError


class FileSetOptions(BaseModel):
    """Options every file reader shares: a file, or a folder and a glob (readers set its default)."""

    model_config = ConfigDict(extra="forbid")

    path: Path = Field(description="A file, or a folder of them.")
    pattern: str = Field("*", description="Glob of files inside a folder.")


class TargetSource(BaseModel):
    """Where a reader finds a target (subclasses add the column or key) and what it is."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["graph", "node"] = Field(description="graph: one value per structure; node: one per atom.")
    unit: str = Field("", description="Physical unit of the values as read (shown in metrics and plots).")
    description: str = Field("", description="What the target is, for `hydradgl data info` and the docs.")
    extensive: bool | None = Field(
        None, description="Graph targets: true if the value grows with the atom count (total energy: sum "
        "readout), false if not (per-atom values: mean readout); shown by `hydradgl data info`.")

    def info(self, dim: int = 1) -> TargetInfo:
        return TargetInfo(level=self.level, dim=dim, unit=self.unit, description=self.description,
                          extensive=self.extensive)


def list_files(path: Path, pattern: str) -> list[Path]:
    """``path`` itself if it is a file, else the files in it matching ``pattern``, sorted."""
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise DataError(f"{root}: no such file or folder (dataset.options.path)")
    matches = sorted(root.glob(pattern))
    dangling = next((p for p in matches if p.is_symlink() and not p.exists()), None)
    if dangling is not None:
        raise DataError(f"{dangling}: symbolic link to a missing file ({os.readlink(dangling)}); "
                        "remove it or restore its target")
    files = [p for p in matches if p.is_file()]
    if not files:
        raise DataError(f"{root}: no files match {pattern!r}")
    return files


def fingerprint_files(options: BaseModel, files: list[Path], skip_bad_files: bool) -> str:
    """Options plus every file's name, size and modification time: cheap, and changes when a file does."""
    digest = hashlib.sha256(options.model_dump_json().encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(f"skip={skip_bad_files}".encode())
    return digest.hexdigest()


def skip_summary(skipped: list[str]) -> str:
    """``"2500 file(s) skipped; most common reason (2500): ..."`` from the skipped files' error messages
    (each ``path[:line]: reason``), so a format mismatch is not hidden behind a count."""
    if not skipped:
        return "0 files skipped"
    reasons = Counter(message.split(": ", 1)[-1] for message in skipped)
    reason, count = reasons.most_common(1)[0]
    example = next(m for m in skipped if m.endswith(reason))
    return (f"{len(skipped)} file(s) skipped; most common reason ({count} of them): {reason} "
            f"(e.g. {example.split(': ', 1)[0]})")
