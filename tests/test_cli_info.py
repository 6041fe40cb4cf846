"""The `info` subcommand and the README's promises about the CLI and CI."""

import subprocess
from pathlib import Path

from tf_mobilenet_v1.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_info_prints_counts(capsys):
    assert main(["info", "mobilenet_v1_1.0_224"]) == 0
    out = capsys.readouterr().out
    assert "4,233,001" in out and "567,716,352" in out and "depth_multiplier" in out


def test_info_unknown_variant_is_one_line_error(capsys):
    assert main(["info", "mobilenet_v1_x_224"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet-v1: error: unknown variant") and "\n" not in err


def test_ci_runs_the_readme_test_command():
    cmd = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert "pip install" in cmd and "pytest" in cmd
    assert "mobilenet-v1 predict" in (ROOT / "README.md").read_text()


def test_info_reads_a_checkpoint_path(capsys):
    from conftest import fixture_path

    ckpt = fixture_path("slim_reference", "mobilenet_v1_0.5_160", "mobilenet_v1_0.5_160.ckpt.index")
    assert main(["info", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1_0.5_160" in out and "1,332,105" in out
