"""Free disk before a run: what a run may need, counted from real files (sparse ones where a
test needs more than the disk has), and a run short of disk stopping before it loads."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest
from pipeline_helpers import BIN, ROOT, run_env, write_config

from retention_pipeline.lib.config import load_config
from retention_pipeline.lib.disk import (
    MIN_FREE_DISK_ENV,
    DiskSpaceError,
    check_free_disk,
    disk_in_use,
    parse_size,
)
from retention_pipeline.lib.generate import generate_orders, write_orders

GB = 1000**3


def test_sizes_are_read_as_duckdb_writes_them():
    assert parse_size("6GB", "V") == 6_000_000_000
    assert parse_size("512MiB", "V") == 512 * 1024 * 1024
    assert parse_size("1.5 TB", "V") == 1_500_000_000_000
    assert parse_size("0", "V") == 0
    for text in ("12", "lots", "6XB", "-1GB", ""):
        with pytest.raises(ValueError, match=f"V={text!r} is not a size such as 6GB"):
            parse_size(text, "V")


def test_a_folder_counts_hard_linked_files_once_and_follows_no_links(tmp_path):
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "part.parquet").write_bytes(b"x" * 1000)
    (tmp_path / "v2").mkdir()
    os.link(tmp_path / "v1" / "part.parquet", tmp_path / "v2" / "part.parquet")
    (tmp_path / "v2" / "new.parquet").write_bytes(b"y" * 234)
    (tmp_path / "parquet").symlink_to("v2")
    (tmp_path / "snapshot.duckdb").symlink_to(tmp_path / "v1" / "part.parquet")
    assert disk_in_use(tmp_path) == 1234
    assert disk_in_use(tmp_path / "v2" / "new.parquet") == 234


def _free(path: Path) -> int:
    return shutil.disk_usage(path).free


def _sparse(path: Path, size: int) -> None:
    """A file of `size` bytes that takes almost no disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)


def _config_with_warehouse(directory: Path, **overrides):
    config = load_config(write_config(directory, **overrides))
    config.warehouse_path.write_bytes(b"w" * 4096)
    return config


def test_a_run_needs_as_much_free_disk_again_as_the_warehouse_and_the_published_copy(
    tmp_path, monkeypatch
):
    monkeypatch.delenv(MIN_FREE_DISK_ENV, raising=False)
    config = _config_with_warehouse(tmp_path)
    check_free_disk(config)  # no published copy yet: 4096 bytes
    published = config.publish_dir / "warehouse.duckdb"
    _sparse(published, _free(tmp_path) // 2)
    check_free_disk(config)
    _sparse(published, _free(tmp_path) + GB)
    with pytest.raises(DiskSpaceError) as error:
        check_free_disk(config)
    message = str(error.value)
    assert f"not enough free disk for this run at {tmp_path}:" in message
    free, needed = _free(tmp_path), 4096 + published.stat().st_size
    assert f"{free / GB:.1f} GB free, {needed / GB:.1f} GB needed" in message
    assert "the warehouse file (0 MB) and the published copy" in message
    assert f"set {MIN_FREE_DISK_ENV} to the free space a run needs" in message
    assert "of a stopped run" not in message
    spill = tmp_path / "warehouse.duckdb.tmp"
    (spill / "duckdb_temp_storage_S32K-0.tmp").parent.mkdir()
    (spill / "duckdb_temp_storage_S32K-0.tmp").write_bytes(b"s" * 2_000_000)
    with pytest.raises(DiskSpaceError, match=f"holds 2 MB in {spill}: delete it while no run"):
        check_free_disk(config)


def test_the_free_disk_a_run_needs_can_be_set_or_turned_off(tmp_path, monkeypatch):
    config = _config_with_warehouse(tmp_path)
    monkeypatch.setenv(MIN_FREE_DISK_ENV, "1MB")
    _sparse(config.publish_dir / "warehouse.duckdb", _free(tmp_path) + GB)
    check_free_disk(config)
    monkeypatch.setenv(MIN_FREE_DISK_ENV, "0")
    check_free_disk(config)
    monkeypatch.setenv(MIN_FREE_DISK_ENV, "1000TB")
    (config.publish_dir / "warehouse.duckdb").unlink()
    with pytest.raises(DiskSpaceError, match=f"needed \\({MIN_FREE_DISK_ENV}=1000TB\\)"):
        check_free_disk(config)
    monkeypatch.setenv(MIN_FREE_DISK_ENV, "lots")
    with pytest.raises(ValueError, match=f"{MIN_FREE_DISK_ENV}='lots' is not a size"):
        check_free_disk(config)


def test_each_disk_needs_room_for_what_is_on_it(tmp_path, monkeypatch):
    """The published copy on another disk: the warehouse's disk need not hold room for it."""
    monkeypatch.delenv(MIN_FREE_DISK_ENV, raising=False)
    if os.stat("/dev/shm").st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is on the same disk as the test folder here")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other_disk:
        config = _config_with_warehouse(tmp_path, warehouse={
            "type": "duckdb", "path": "warehouse.duckdb", "publish_dir": other_disk,
        })  # fmt: skip
        published = Path(other_disk) / "warehouse.duckdb"
        _sparse(published, max(_free(tmp_path), _free(other_disk)) + GB)
        with pytest.raises(DiskSpaceError, match=f"at {other_disk}:"):
            check_free_disk(config)
        _sparse(published, _free(other_disk) // 2)
        check_free_disk(config)


def test_a_run_short_of_disk_stops_before_loading_and_says_so(tmp_path):
    write_orders(generate_orders(customers=20, seed=7), tmp_path / "orders.csv")
    config = write_config(tmp_path)
    result = subprocess.run(
        [str(BIN / "retention-pipeline"), "run", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=run_env(**{MIN_FREE_DISK_ENV: "1000TB"}),
    )
    assert result.returncode != 0
    assert f"not enough free disk for this run at {tmp_path}:" in result.stderr
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("select count(*) from raw.orders").fetchall() == [(0,)]
        (status, error), *others = con.sql("select status, error from raw.load_audit").fetchall()
    assert others == [] and status == "failed"
    assert error.startswith("not enough free disk for this run")
