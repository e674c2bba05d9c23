import subprocess
import sys

from toolkit.cli import COMMANDS, main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "toolkit", *args], capture_output=True, text=True)


def test_help_lists_every_subcommand():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in ("reference", "quantize", "distill", "precision", "index", "serve", "eval", "compare", "demo"):
        assert name in COMMANDS and name in out.stdout


def test_each_subcommand_has_help():
    for name in COMMANDS:
        out = run_cli(name, "--help")
        assert out.returncode == 0, (name, out.stderr)


def test_env_prints_json(capsys):
    assert main(["env", "--json"]) == 0
    assert '"cpu"' in capsys.readouterr().out


def test_unknown_command_exits_nonzero():
    out = run_cli("frobnicate")
    assert out.returncode == 2 and "invalid choice" in out.stderr
