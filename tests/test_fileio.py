"""Atomic outputs: nothing partial, nothing overwritten without force; and the faults a write
meets for real: a disk that fills mid-write (RLIMIT_FSIZE gives the same EFBIG a full disk gives
ENOSPC, without a small file system), SIGTERM, a rename that fails half-way through a two-file
output, two runs racing for one output, and --force aimed at a directory that is not ours."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import QuickArchive, cli, fixture_path, snapshot, tiny_model
from hostile import child_env, killed_writes, leftovers, run_cli_many, run_process

from tf_mobilenet_v1 import fileio
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


# output name -> command; each is written for real first, then again under a size limit.
OUTPUTS = {
    "o.keras": "convert", "o.weights.h5": "convert", "o.safetensors": "convert",
    "o.bin": "convert", "o.ckpt": "convert", "hf_dir": "convert",
    "o.tflite": "export", "sm": "export",
}


def _args(name, src, dst, *extra):
    args = [OUTPUTS[name], src, dst, *extra]
    if name == "sm":
        args += ["--format", "saved_model"]
    return args


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    """A tiny model's .keras file (random weights, 32 px), the source of every write here."""
    path = tmp_path_factory.mktemp("src") / "tiny_0.25_32.keras"
    tiny_model().save(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("names", [
    pytest.param(sorted(set(OUTPUTS) - {"o.bin"}), id="all-but-bin"),
    pytest.param(["o.bin"], id="bin", marks=pytest.mark.interop)])  # .bin needs torch
def test_full_disk_mid_write(tmp_path, src, names):
    """Every output form, first into a new directory (nothing may be left, not even the
    directory), then with --force over a good output (which must survive byte for byte)."""
    fresh, out = tmp_path / "new" / "deeper", tmp_path / "out"
    out.mkdir()
    for name in names:  # good outputs, written here: no limit, so no child needed
        assert cli(*_args(name, src, out / name)).returncode == 0, name
    before = snapshot(out)
    # One child for both limited passes (TensorFlow is imported once): into a new directory,
    # then --force over the good outputs.
    n = len(names)
    runs = run_cli_many([_args(m, src, fresh / m) for m in names]
                        + [_args(m, src, out / m, "--force") for m in names],
                        file_size_limit=20_000)
    for name, run in zip(names, runs[:n], strict=True):
        line = run.one_line_error()
        assert line.startswith(f"mobilenet-v1: error: cannot write {fresh / name}"), line
        assert "File too large" in line, line
    assert not (tmp_path / "new").exists(), "a failed write left its parent directories"
    for name, run in zip(names, runs[n:], strict=True):
        assert "File too large" in run.one_line_error(), name
    assert snapshot(out) == before
    assert leftovers(out) == []


@pytest.mark.slow  # a fresh process or a training run: seconds, not milliseconds
def test_force_export_that_fails_keeps_both_model_and_labels(tmp_path, src):
    other = tiny_model(num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    other_src = tmp_path / "three.keras"
    other.save(other_src)
    out = tmp_path / "out"
    out.mkdir()
    assert cli("export", other_src, out / "m.tflite").returncode == 0
    before = snapshot(out)
    assert (out / "labels.txt").read_text() == "a\nb\nc\n"
    line = run_process("export", src, out / "m.tflite", "--force",
                       file_size_limit=20_000).one_line_error()
    assert "cannot write" in line
    assert snapshot(out) == before
    assert leftovers(out) == []


def test_two_file_output_is_replaced_as_a_unit(tmp_path, monkeypatch):
    """The second rename of a checkpoint's pair fails: the old pair is put back intact."""
    dsts = [str(tmp_path / "m.ckpt.index"), str(tmp_path / "m.ckpt.data-00000-of-00001")]
    for path in dsts:
        with open(path, "w") as f:
            f.write("old " + path)
    before = snapshot(tmp_path)
    real_replace = os.replace
    calls = []

    def flaky(a, b):
        calls.append(b)
        if b == dsts[1] and not str(a).endswith(("old0", "old1")):
            raise OSError(5, "Input/output error")
        return real_replace(a, b)

    monkeypatch.setattr(fileio.os, "replace", flaky)
    with pytest.raises(OSError, match="Input/output error"):
        with fileio.atomic_outputs(dsts, force=True) as tmps:
            for tmp in tmps:
                with open(tmp, "w") as f:
                    f.write("new")
    assert dsts[0] in calls  # the first new file was in place before the failure
    assert snapshot(tmp_path) == before


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sm", "hf_dir", "o.safetensors"])
def test_sigterm_mid_write_leaves_no_temporary_files(tmp_path, src, name):
    proc = subprocess.Popen([sys.executable, "-m", "tf_mobilenet_v1",
                             *map(str, _args(name, src, tmp_path / name))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    deadline = time.monotonic() + 120
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.fail(f"the write finished before SIGTERM arrived; {name} is too quick to test")
    assert proc.returncode == 143, err[-2000:]
    assert "mobilenet-v1: terminated" in err and "Traceback" not in err
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_two_concurrent_converts_one_wins(tmp_path):
    """Both start before either output exists; without --force only one may succeed."""
    src = fixture_path("official", "mobilenet_v1_0.25_128")
    cmd = [sys.executable, "-m", "tf_mobilenet_v1", "convert", str(src),
           str(tmp_path / "o.safetensors")]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=child_env()) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "already exists" in loser or "created by another process" in loser
    assert sorted(os.listdir(tmp_path)) == ["o.safetensors"]


def test_commit_refuses_an_output_that_appeared_meanwhile(tmp_path):
    dst = tmp_path / "o.safetensors"
    with pytest.raises(FileExistsError, match="created by another process"):
        with atomic_output(dst) as tmp:
            with open(tmp, "w") as f:
                f.write("mine")
            dst.write_text("theirs")  # the other run finished first
    assert dst.read_text() == "theirs"
    assert leftovers(tmp_path) == []


def test_force_onto_a_users_directory_is_refused(tmp_path, src):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "thesis.docx").write_text("years of work")
    for args in (["convert", src, folder, "--force"],
                 ["export", src, folder, "--format", "saved_model", "--force"]):
        line = cli(*args).one_line_error()
        assert "'thesis.docx', which none of our outputs does" in line
    assert os.listdir(folder) == ["thesis.docx"]


@pytest.mark.parametrize("planted", ["assets/photos/holiday.jpg", "variables/run1.log",
                                     "assets.extra/notes.txt", "variables/sub/deep.txt"])
def test_force_looks_at_every_depth(tmp_path, src, planted):
    """config.json on top and a user's file deep inside assets/ or variables/: still not our
    output, so --force refuses it and deletes nothing."""
    folder = tmp_path / "out"
    (folder / planted).parent.mkdir(parents=True)
    (folder / planted).write_text("the user's")
    (folder / "config.json").write_text("{}")
    before = snapshot(folder)
    for args in (["convert", src, folder, "--force"],
                 ["export", src, folder, "--format", "saved_model", "--force"]):
        line = cli(*args).one_line_error()
        first = planted.split("/")[0]
        assert f"holds '{first}/" in line and "none of our outputs" in line
    assert snapshot(folder) == before


@pytest.mark.slow  # real exports: seconds
def test_force_onto_our_own_directory_outputs_works(tmp_path, src, monkeypatch):
    from tf_mobilenet_v1.converters import saved_model

    for args in (["convert", src, tmp_path / "hf"],
                 ["export", src, tmp_path / "sm", "--format", "saved_model"]):
        assert cli(*args).returncode == 0
        with monkeypatch.context() as m:  # the replaced output is real; its successor need not be
            m.setattr(saved_model, "build_archive", lambda *a, **k: QuickArchive())
            assert cli(*args, "--force").returncode == 0
    assert leftovers(tmp_path) == []
    assert (tmp_path / "sm" / "saved_model.pb").read_bytes() == QuickArchive.GRAPH


def test_temporaries_of_a_killed_write_are_removed_by_the_next_one(tmp_path, src):
    """SIGKILL leaves ``.<output>.<8 characters>.tmp`` beside the output: the next write of
    that output removes it once it is 10 minutes old; a fresh one (a run writing now) and
    anything not named exactly so stay."""
    stale, fresh, other = killed_writes(tmp_path, ".o.safetensors.abcd1234.tmp",
                                        ".o.safetensors.efgh5678.tmp", ".o.safetensors.mine.tmp")
    assert cli("convert", src, tmp_path / "o.safetensors").returncode == 0
    assert not stale.exists() and fresh.exists() and other.exists()
