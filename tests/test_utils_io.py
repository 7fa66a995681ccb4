"""Atomic writes: all or nothing, ordinary permissions."""

import os
import stat

import pytest

from facefactors.utils.io import atomic_path, atomic_write_text


def test_atomic_write_has_ordinary_permissions(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "hello")
    mode = stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "b.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]
