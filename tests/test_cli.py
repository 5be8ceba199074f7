"""The CLI: subcommands, one-line errors with exit status 2, tracebacks only with --debug."""

import subprocess
import sys
from pathlib import Path

import pytest

from iccld.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for name in ("prepare", "train", "evaluate", "predict", "score", "demo"):
        assert name in out


def test_user_error_is_one_line_with_status_2(tmp_path, capsys):
    code = main(["train", "--config", str(tmp_path / "missing.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "missing.yaml" in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "iccld.cli", "--debug", "train", "--config",
                             str(tmp_path / "missing.yaml")], capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


def test_bad_override_is_named(tmp_path, capsys):
    code = main(["train", "--config", str(REPO / "configs/synthetic/stage1.yaml"), "trainer.max_iterz=3",
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "did you mean 'trainer.max_iters'" in capsys.readouterr().err
