"""Free disk before a run. A DuckDB run writes the tables it rebuilds beside their old
versions in the warehouse file, spills beside it past its memory bound, and publishes a new
copy of the marts beside the last one; out of disk, it fails midway (a 100M-order night
after 13 minutes, the file grown from 26 to 38 GB: docs/benchmarks.md). So a run
checks first, and stops at once with what to do."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from stat import S_ISLNK

from retention_pipeline.lib.config import PipelineConfig
from retention_pipeline.lib.warehouse import DUCKDB_SIZE, spill_folder

MIN_FREE_DISK_ENV = "RETENTION_MIN_FREE_DISK"


class DiskSpaceError(RuntimeError):
    """Less free disk than the run may need, found before it starts."""


def parse_size(text: str, variable: str) -> int:
    """Bytes of a size written as DuckDB writes them (6GB, 512MiB), or 0."""
    if re.fullmatch(r"0+(?:\.0+)?", text.strip()):
        return 0
    match = re.fullmatch(DUCKDB_SIZE, text.strip())
    if match is None:
        raise ValueError(f"{variable}={text!r} is not a size such as 6GB or 512MiB (or 0)")
    number, unit, binary = match.groups()
    return int(float(number) * (1024 if binary else 1000) ** " KMGT".index(unit))


def disk_in_use(path: Path) -> int:
    """Bytes held by a file, or by the files under a folder, each hard-linked file once
    and links not followed (the published folder links unchanged Parquet files between
    versions)."""
    if path.is_file():
        return path.stat().st_size
    seen: dict[tuple[int, int], int] = {}
    for folder, _, files in os.walk(path):
        for name in files:
            stat = Path(folder, name).lstat()
            if not S_ISLNK(stat.st_mode):
                seen[stat.st_dev, stat.st_ino] = stat.st_size
    return sum(seen.values())


def check_free_disk(config: PipelineConfig) -> None:
    """Raises DiskSpaceError when a disk that the warehouse file or the published copy is on
    has less free space than the run may need: as much again as they hold now (a night's
    peak took 52-62% of that at 10M and 1M orders; a 100M-order night more than the 15 GB
    that were left beside 54), or RETENTION_MIN_FREE_DISK when it is set (0: no check).
    PostgreSQL's disk is the server's, not checked here."""
    if config.warehouse.type != "duckdb":
        return
    floor = os.environ.get(MIN_FREE_DISK_ENV)
    minimum = None if floor is None else parse_size(floor, MIN_FREE_DISK_ENV)
    if minimum == 0:
        return
    # Per disk: a folder on it, and what of the two is on it.
    disks: dict[int, tuple[Path, dict[str, int]]] = {}
    for what, path in (
        ("the warehouse file", config.warehouse_path),
        ("the published copy", config.publish_dir),
    ):
        folder = _existing_folder(path)
        held = disk_in_use(path) if path.exists() else 0
        disks.setdefault(folder.stat().st_dev, (folder, {}))[1][what] = held
    for folder, held in disks.values():
        needed = sum(held.values()) if minimum is None else minimum
        free = shutil.disk_usage(folder).free
        if free >= needed:
            continue
        if minimum is None:
            reason = (
                "as much again as "
                + " and ".join(f"{what} ({_in_words(size)})" for what, size in held.items())
                + " take now: a run writes the tables it rebuilds beside their old versions, "
                "DuckDB spills beside the file, and a publish writes the new copy beside the last"
            )
        else:
            reason = f"{MIN_FREE_DISK_ENV}={floor}"
        raise DiskSpaceError(
            f"not enough free disk for this run at {folder}: {_in_words(free)} free, "
            f"{_in_words(needed)} needed ({reason}). Free space there{_spill_left(config)}, "
            "move warehouse.path or warehouse.publish_dir to a larger disk, or set "
            f"{MIN_FREE_DISK_ENV} to the free space a run needs (0 turns this check off)"
        )


def _spill_left(config: PipelineConfig) -> str:
    """Where a killed run left DuckDB's spill, which DuckDB removes only at the next run that
    spills (docs/scaling.md), in words; empty when there is none."""
    spill = spill_folder(config.warehouse_path)
    left = disk_in_use(spill) if spill.is_dir() else 0
    if not left:
        return ""
    return (
        f" (DuckDB's spill of a stopped run holds {_in_words(left)} in {spill}: delete it "
        "while no run is going)"
    )


def _existing_folder(path: Path) -> Path:
    """The path's folder, or the nearest one above it that exists (before a first run)."""
    folder = path if path.is_dir() else path.parent
    while not folder.exists():
        folder = folder.parent
    return folder


def _in_words(size: int) -> str:
    return f"{size / 1000**3:.1f} GB" if size >= 100 * 1000**2 else f"{size / 1000**2:.0f} MB"
