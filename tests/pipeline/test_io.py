"""Atomic writes: the target appears whole or not at all."""

from __future__ import annotations

import json
import os
import stat

import pytest

from medsr.pipeline.io import atomic_open, atomic_path, write_json_atomic, write_text_atomic


def test_write_replaces_whole_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "out.json"
    write_json_atomic({"a": 1}, target)
    assert json.loads(target.read_text()) == {"a": 1}
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & 0o044, "output should be readable by group/others under the usual umask"
    assert [p.name for p in target.parent.iterdir()] == ["out.json"]


def test_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "report.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError), atomic_open(target, "w") as fh:
        fh.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.txt"]


def test_atomic_path_keeps_the_nifti_suffix(tmp_path):
    with atomic_path(tmp_path / "sr.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"x")
    assert (tmp_path / "sr.nii.gz").read_bytes() == b"x"
