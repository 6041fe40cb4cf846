"""Atomic outputs: nothing partial, nothing overwritten without force."""

import os

import pytest

from tf_mobilenet_v1.fileio import atomic_output


def test_success_replaces_only_at_the_end(tmp_path):
    dst = tmp_path / "out.bin"
    with atomic_output(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(b"new")
        assert not dst.exists()
    assert dst.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_existing_output_needs_force(tmp_path):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="--force"):
        with atomic_output(dst):
            pass
    assert dst.read_bytes() == b"old"


def test_failure_keeps_previous_file_and_leaves_no_temp(tmp_path):
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(dst, force=True) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"partial")
            raise RuntimeError("writer crashed")
    assert dst.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_directory_output_replaced_whole(tmp_path):
    dst = tmp_path / "model_dir"
    dst.mkdir()
    (dst / "config.json").write_text("old")  # --force replaces only what looks like ours
    (dst / "variables").mkdir()
    with atomic_output(dst, force=True, directory=True) as tmp:
        with open(os.path.join(tmp, "new.txt"), "w") as f:
            f.write("new")
    assert sorted(os.listdir(dst)) == ["new.txt"]
    assert os.listdir(tmp_path) == ["model_dir"]


def test_outputs_get_umask_permissions(tmp_path):
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_output(tmp_path / "d", directory=True) as tmp:
            open(os.path.join(tmp, "x"), "w").close()
        with atomic_output(tmp_path / "f.bin") as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    finally:
        os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "f.bin").st_mode) == 0o644
