"""The `info` subcommand and the README's promises about the CLI and CI."""

import subprocess
from pathlib import Path

from conftest import cli, fixture_path

ROOT = Path(__file__).resolve().parents[1]


def test_info_prints_counts(capsys):
    assert cli("info", "mobilenet_v1_1.0_224").returncode == 0
    out = capsys.readouterr().out
    assert "4,233,001" in out and "567,716,352" in out and "depth_multiplier" in out


def test_info_unknown_variant_is_one_line_error(capsys):
    assert cli("info", "mobilenet_v1_x_224").returncode == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet-v1: error: unknown variant") and "\n" not in err


def test_ci_runs_the_readme_test_command():
    cmd = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert cmd == "bash .ci/tests.sh"
    script = (ROOT / ".ci" / "tests.sh").read_text()
    assert "set -euo pipefail" in script  # pytest's exit 5 (no tests) fails the run too
    assert 'pip_in .venv-quickstart "$src[test]"' in script and "pytest" in script
    assert "mobilenet-v1 predict" in (ROOT / "README.md").read_text()


def test_info_reads_a_checkpoint_path(capsys):
    ckpt = fixture_path("slim_reference", "mobilenet_v1_0.5_160", "mobilenet_v1_0.5_160.ckpt.index")
    assert cli("info", str(ckpt)).returncode == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1_0.5_160" in out and "1,332,105" in out


_NO_TF = """
import contextlib, io, sys
from tf_mobilenet_v1.cli import main
codes = []
for args in (["info", "mobilenet_v1_0.25_128_quant"], ["info", "resnet_50"],
             ["convert", "nowhere/m.keras", "out.keras"], ["export", "mobilenet_v1_9_999"],
             ["predict", "x.jpg", "--top-k", "0"], ["predcit", "x.jpg"]):
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            codes.append(main(args))
        except SystemExit as e:
            codes.append(e.code)
print(codes, sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules))
"""


def test_cheap_subcommands_do_not_import_tensorflow(tmp_path):
    """Import-time behaviour, so a fresh process: a registry name's info, usage errors and
    missing sources answer without TensorFlow's seconds of start-up."""
    import sys

    proc = subprocess.run([sys.executable, "-c", _NO_TF], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[0, 1, 1, 1, 2, 2] []"


def test_unknown_options_are_refused_outside_beam():
    run = cli("info", "mobilenet_v1_1.0_224", "--runner=DirectRunner")
    assert run.returncode == 2 and "unrecognized arguments: --runner=DirectRunner" in run.stderr
