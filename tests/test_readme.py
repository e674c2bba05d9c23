"""Every command the README shows must still be accepted by the Makefile and the ``toolkit`` CLI.

Project rule: "Every command shown in the README is exercised by a test." Each ``make ...`` / ``toolkit ...`` /
``python -m toolkit ...`` command in the README (fenced, indented, inline) is checked, running nothing. Make: the
target and every ``VAR=`` must be in the Makefile, and ``make -n`` (no ``$(shell)``/``$(MAKE)`` there) must print
a command that the real parser (``toolkit.cli``, or the bench module's own) accepts and that carries what the
README implies: ``VAR=value`` as its flag's value (``STEPS`` -> ``--max-steps``), ``REPORTS``/``GATES``/
``BENCH_ARGS`` word for word, ``DEMO=quick`` as ``--quick``, no ``--model`` for ``make serve PROFILE=..``.
Toolkit: it must parse with ``toolkit.cli``. Synopsis notation: ``[optional]`` brackets are dropped, ``a|b``
takes ``a``, ``<x>`` in a word, ``..`` and ``...`` become dummies, ``N``/``n`` becomes 1, a bare ``make quantize``
gets a dummy ``RECIPE``, and a command shortened with ``...`` is parsed with required options relaxed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from toolkit import cli

ROOT = Path(__file__).resolve().parents[1]
SHELL_FENCES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"\s*```\s*(\w*)")
ENV_ASSIGN = re.compile(r"[A-Za-z_]\w*=")
LAUNCHER = re.compile(r"(?:^|/)(?:python3?|torchrun|accelerate)$")


@dataclass(frozen=True)
class Command:
    text: str  # as the README shows it (comments dropped, continuations joined)
    kind: str  # "make" or "toolkit"
    argv: tuple[str, ...]  # after `make`, or after `toolkit` / `-m toolkit`
    elided: bool  # shortened with `...`


def _code_and_prose(readme: str) -> tuple[list[str], str]:
    """Shell lines from fenced and indented code blocks (continuations joined), and the remaining prose."""
    code: list[str] = []
    prose: list[str] = []
    fence: str | None = None
    prev_blank, indented, joining, prev_code = True, False, False, False
    for line in readme.splitlines():
        if m := FENCE.match(line):
            fence = None if fence is not None else m.group(1).lower()
            prev_blank, indented, joining, prev_code = True, False, False, False
            continue
        blank = not line.strip()
        if fence is None:
            indented = (line.startswith("    ") and (prev_blank or indented)) or (blank and indented)
        prev_blank = blank
        if fence is None and not indented:
            prose.append(line)
            joining = prev_code = False
            continue
        if fence is not None and fence not in SHELL_FENCES:
            continue
        s = re.sub(r"(?:^|\s)#.*", "", line).strip().removeprefix("$ ")
        if s and (joining or (s.startswith("[") and prev_code)):  # `\` continuation or a synopsis' next line
            code[-1] += " " + s
        elif s:
            code.append(s)
        joining = s.endswith("\\")
        if joining:
            code[-1] = code[-1][:-1].rstrip()
        prev_code = bool(s)
    return code, "\n".join(prose)


def _command(text: str) -> Command | None:
    text = " ".join(text.replace("\\|", "|").split())
    try:
        tokens = shlex.split(text)
    except ValueError:
        return None
    while tokens and ENV_ASSIGN.match(tokens[0]):  # DEVICE=cuda make setup
        tokens.pop(0)
    if tokens[:1] in (["make"], ["toolkit"]):
        kind, argv = tokens[0], tokens[1:]
    elif tokens and LAUNCHER.search(tokens[0]) and "-m" in tokens:  # python / torchrun / accelerate launch -m toolkit
        i = tokens.index("-m")
        if tokens[i + 1:i + 2] != ["toolkit"]:
            return None
        kind, argv = "toolkit", tokens[i + 2:]
    else:
        return None
    # `toolkit` alone names the program; `toolkit <subcommand> --help` is a pattern, not a command
    if (kind == "toolkit" and not argv) or any(re.fullmatch(r"\[?<[^<>]*>\]?", t) for t in argv):
        return None
    cleaned = []
    for t in argv:
        t = re.sub(r"<[^<>]*>", "x", t.strip("[]"))
        t = "1" if t == "N" else t  # the conventional number placeholder
        cleaned.append(t.split("|")[0] if "|" in t.strip("|") else t)
    return Command(text, kind, tuple(t for t in cleaned if t != "..."), "..." in cleaned)


def readme_commands() -> list[Command]:
    code, prose = _code_and_prose((ROOT / "README.md").read_text())
    spans = re.findall(r"`([^`]+)`", prose)
    return list({c.text: c for c in map(_command, code + spans) if c is not None}.values())


COMMANDS = readme_commands()
MAKEFILE = (ROOT / "Makefile").read_text()
TARGETS = set(re.findall(r"^([\w.-]+)\s*:(?!=)", MAKEFILE, re.M))
VARIABLES = set(re.findall(r"\$[({]([A-Za-z_]\w*)[)}]", MAKEFILE)) | set(
    re.findall(r"^([A-Za-z_]\w*)\s*[?:+]?=", MAKEFILE, re.M))
_add_argument = argparse.ArgumentParser.add_argument


def _add_optional_argument(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> argparse.Action:
    """For elided commands: options the README left out behind `...` are not missing."""
    if "required" in kwargs:
        kwargs["required"] = False
    return _add_argument(self, *args, **kwargs)


def test_extraction_finds_the_readme_commands() -> None:
    texts = {c.text for c in COMMANDS}
    assert len(COMMANDS) >= 15, texts
    assert {"make demo", "make test"} <= texts, texts
    assert any(c.kind == "toolkit" for c in COMMANDS), texts


FLAGS = {"RECIPE": "--recipe", "MODEL": "--model", "TEACHER": "--teacher", "STUDENT": "--student",
         "OUTPUT": "--output", "BUDGET": "--budget", "DOCS": "--docs", "INDEX_TYPE": "--index-type",
         "INDEX": "--index", "PROFILE": "--profile", "SUITE": "--suite", "BASELINE": "--baseline", "STEPS": "--max-steps",
         "SLO": "--slo", "REPEATS": "--repeats", "QUALITY": "--quality"}
TARGET_FLAGS = {"distill": {"MODEL": "--teacher"}, "bench-distill": {"MODEL": "--teacher", "STEPS": "--steps"},
                "bench-ab": {"A": "--model", "B": "--model"}}
SWITCHES = {"MAX_LOAD": "--find-max-load"}  # VAR=1 turns a flag on
SPLICED = {"REPORTS", "GATES", "BENCH_ARGS", "PYTEST_ARGS"}  # words the recipe pastes in as they are
NEEDED = {"quantize": {"RECIPE": "x.yaml"}, "distill": {"RECIPE": "x.yaml"}, "compare": {"REPORTS": "a.json"},
          "bench-ab": {"B": "b"}}
NO_TOOLKIT = {"help", "setup", "test", "clean", "gpu-check", "setup-llamacpp"}
RUN_LINE = re.compile(r"\S*python3?\s+-m\s+(toolkit(?:\.\w+\.(?:bench\w*|ab|crosscheck))?)(?:\s|$)")


class _Parsed(Exception):  # raised in place of running a bench once its parser has accepted the arguments
    pass


_parse_args = argparse.ArgumentParser.parse_args


def _stop_after_parse(self: argparse.ArgumentParser, args: Any = None, namespace: Any = None) -> None:
    raise _Parsed(_parse_args(self, args, namespace))


def _parse_error(module: str, argv: list[str]) -> str | None:
    """Parse argv as `python -m module` would, with its real parser; argparse's complaint, or None."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if module == "toolkit":
                selected = next((a for a in argv if not a.startswith("-")), None)  # as cli.main picks the stage
                cli.build_parser(selected if selected in cli.COMMANDS else None).parse_args(argv)
            else:  # the bench modules build their parser inside main(): run main() up to parse_args only
                with mock.patch.object(argparse.ArgumentParser, "parse_args", _stop_after_parse):
                    importlib.import_module(module).main(argv)
                return f"{module}.main() returned without parsing its arguments"
    except SystemExit as exc:
        return (err.getvalue().strip() or f"exit {exc.code}") if exc.code else None
    except _Parsed:
        pass
    return None


def _value(var: str, value: str) -> str:  # `STEPS=n`, `MODEL=...`, `GATES=".."`
    return "1" if value in ("n", "N") else ("" if var in SPLICED else "x") if value in ("..", "...") else value


def _contains(argv: list[str], words: list[str]) -> bool:
    return any(argv[i:i + len(words)] == words for i in range(len(argv) + 1))


def check_translation(cmd: Command, cwd: Path = ROOT) -> None:
    """Check the README's `make TARGET VAR=...` against the Makefile, then dry-run it in cwd and check the command."""
    for arg in cmd.argv:
        if ENV_ASSIGN.match(arg):
            assert arg.split("=", 1)[0] in VARIABLES, f"README `{cmd.text}`: the Makefile never uses {arg}"
        elif not arg.startswith("-"):
            assert arg in TARGETS, f"README `{cmd.text}`: no Makefile target {arg!r}"
    target = next(a for a in cmd.argv if not ENV_ASSIGN.match(a) and not a.startswith("-"))
    given = dict(a.split("=", 1) for a in cmd.argv if ENV_ASSIGN.match(a))
    variables = {**NEEDED.get(target, {}), **{k: _value(k, v) for k, v in given.items()}}
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES and not k.startswith("MAKE") and k != "MFLAGS"}
    proc = subprocess.run(["make", "-n", "-s", target, *(f"{k}={v}" for k, v in variables.items())], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=30)
    where = f"README `{cmd.text}` -> make -n printed:\n{proc.stdout}{proc.stderr}"
    assert proc.returncode == 0, where
    if "DEVICE" in variables:
        assert f"DEVICE={variables['DEVICE']} " in proc.stdout, where
    if target in NO_TOOLKIT:
        return
    runs = [(m.group(1), shlex.split(line)[3:]) for line in proc.stdout.splitlines() if (m := RUN_LINE.match(line))]
    assert len(runs) == 1, f"expected one `python -m toolkit...` line; {where}"
    module, argv = runs[0]
    error = _parse_error(module, argv)
    assert error is None, f"{where}\n{module} rejects it: {error}"
    flags = {**FLAGS, **TARGET_FLAGS.get(target, {})}
    for var, value in variables.items():
        if var in SPLICED:
            assert _contains(argv, shlex.split(value)), f"{var}={value!r} is not passed on; {where}"
        elif var in SWITCHES:
            assert SWITCHES[var] in argv, f"{var}={value} does not turn on {SWITCHES[var]}; {where}"
        elif var not in ("DEMO", "DEVICE"):
            assert var in flags, f"this test does not know which flag {var} becomes; {where}"
            assert _contains(argv, [flags[var], value]), f"{var}={value} is not passed as {flags[var]}; {where}"
    if target == "demo":
        assert ("--quick" in argv) == (variables.get("DEMO") == "quick"), f"DEMO vs --quick; {where}"
    if target == "serve" and "PROFILE" in variables and "MODEL" not in variables:
        assert "--model" not in argv, f"PROFILE without MODEL must serve the profile's model; {where}"


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.kind == "make"], ids=lambda c: c.text)
def test_make_command_matches_makefile(cmd: Command) -> None:
    check_translation(cmd)


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.kind == "toolkit"], ids=lambda c: c.text)
def test_toolkit_command_parses(cmd: Command, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = list(cmd.argv)
    assert argv and argv[0] in cli.COMMANDS, f"README `{cmd.text}`: no such toolkit subcommand"
    if len(argv) == 1 and not cmd.elided:
        return  # prose naming a subcommand (`toolkit eval`), not an invocation
    if cmd.elided:
        monkeypatch.setattr(argparse.ArgumentParser, "add_argument", _add_optional_argument)
    error = _parse_error("toolkit", argv)
    assert error is None, f"README `{cmd.text}` does not parse: {error}"
