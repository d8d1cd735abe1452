"""ouro.io.files' staging helpers, shared by render, eval-gso, GSO downloads and training."""

import os
import subprocess
import sys

from ouro.io.files import STAGING, clean_stale_staging, host_name, remove_staging_area, replace_folder, staging_folder


def test_staging_folder_is_fresh_and_named_after_its_owner(tmp_path):
    folder = staging_folder(tmp_path, "obj")
    assert folder == tmp_path / STAGING / f"obj.{host_name()}.{os.getpid()}" and folder.is_dir()
    (folder / "half.png").write_bytes(b"x")
    again = staging_folder(tmp_path, "obj")  # what this process left before is removed
    assert again == folder and list(again.iterdir()) == []
    assert staging_folder(tmp_path, "obj", ".download").parent == tmp_path / ".download"


def test_stale_staging_of_dead_processes_is_removed_and_the_area_only_when_empty(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = tmp_path / STAGING / f"obj.{host_name()}.{int(dead.stdout)}"  # that process has exited
    other_host = tmp_path / STAGING / f"obj.elsewhere.{int(dead.stdout)}"  # another host's: its pid says nothing here
    for folder in (stale, other_host):
        folder.mkdir(parents=True)
    mine = staging_folder(tmp_path, "live")
    clean_stale_staging(tmp_path)
    assert not stale.exists() and other_host.is_dir() and mine.is_dir()
    remove_staging_area(tmp_path)
    assert (tmp_path / STAGING).is_dir()  # not empty: others are still working
    for folder in (other_host, mine):
        folder.rmdir()
    remove_staging_area(tmp_path)
    assert not (tmp_path / STAGING).exists()


def test_replace_folder_swaps_a_finished_folder_into_place(tmp_path):
    new = staging_folder(tmp_path, "obj")
    (new / "result.json").write_text("new")
    dest = tmp_path / "objects" / "obj"  # its parent is created
    replace_folder(new, dest)
    assert (dest / "result.json").read_text() == "new" and not new.exists()
    newer = staging_folder(tmp_path, "obj")
    (newer / "result.json").write_text("newer")
    replace_folder(newer, dest)
    assert (dest / "result.json").read_text() == "newer"
    assert sorted(p.name for p in (tmp_path / "objects").iterdir()) == ["obj"]  # the old copy is gone
