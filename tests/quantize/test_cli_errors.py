"""Bad input through the real CLI: exit code 2, one line on stderr, nothing left behind."""

import json
import subprocess
import sys

import pytest

from toolkit.paths import REPO_ROOT, RECIPES_DIR

RTN = str(RECIPES_DIR / "quantize" / "rtn-w4a16.yaml")


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "toolkit", "quantize", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _bert_dir(tmp_path):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    return d


@pytest.mark.parametrize("case", ["missing-model", "not-causal-lm", "unknown-scheme", "unwritable-output"])
def test_fast_failures(case, tiny_llama, text_files, tmp_path):
    out = tmp_path / "out"
    args = ["--recipe", RTN, "--model", tiny_llama, "--output", out, "--eval-data", text_files["eval"]]
    if case == "missing-model":
        args[3] = tmp_path / "no-such-model"
        expect = "model path not found"
    elif case == "not-causal-lm":
        args[3] = _bert_dir(tmp_path)
        expect = "not a causal LM"
    elif case == "unknown-scheme":
        args += ["--set", "scheme=W3A7"]
        expect = "field 'scheme'"
    else:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        out = blocker / "out"
        args[5] = out
        expect = "cannot create output directory"
    msg = _cli(*args)
    assert expect in msg
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_group_size_not_dividing_leaves_existing_output_untouched(tiny_llama, text_files, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("previous good artifact")
    msg = _cli("--recipe", RTN, "--model", tiny_llama, "--output", out, "--eval-data", text_files["eval"],
               "--set", "group_size=96")
    assert "field 'group_size': 96 does not divide the input size 256" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["marker"]


def test_too_short_calibration_data(tiny_llama, text_files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("just a few words")
    out = tmp_path / "out"
    msg = _cli("--recipe", RECIPES_DIR / "quantize" / "gptq-w4a16.yaml", "--model", tiny_llama, "--output", out,
               "--eval-data", text_files["eval"], "--calibration-data", short, "--seq-len", 64)
    assert "too short" in msg and "calibration.seq_len=64" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["short.txt"]


def test_killed_run_leaves_nothing_behind(tiny_llama, text_files, tmp_path):
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "quantize", "--recipe", RTN, "--model", str(tiny_llama),
                             "--output", str(out), "--eval-data", str(text_files["eval"])],
                            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.time() < deadline, "run ended before building its temp directory"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert list(tmp_path.iterdir()) == [], err[-2000:]
