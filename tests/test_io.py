"""Atomic writes: complete or absent, and with the permissions a plain write would give."""

import os
import stat

import pytest

from ia2.io import atomic_path, write_json, write_text


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_files_get_the_umask_mode_not_0600(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "sub" / "b.json", {"a": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.txt", "sub/b.json", "plain.txt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
