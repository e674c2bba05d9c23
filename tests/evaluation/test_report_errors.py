"""Bad report files give one-line errors (exit 2 from the CLI), never tracebacks."""

import json
import subprocess
import sys

import pytest

from toolkit.config import parse_fraction
from toolkit.errors import ToolkitError
from toolkit.evaluation.compare import pareto_front
from toolkit.evaluation.report import read_report


def run_compare(*args):
    return subprocess.run([sys.executable, "-m", "toolkit", "compare", *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("content, message", [
    ("{not json", "corrupt report (not valid JSON at line 1)"),
    ("[1, 2]", "not a toolkit eval report"),
    (json.dumps({"stage": "quantize"}), "not a toolkit eval report"),
    (json.dumps({"schema": "toolkit.eval.report/0"}), "is not supported"),
    (json.dumps({"schema": "toolkit.eval.report/1", "model": {"path": "m", "name": "m"}}), "field 'quality'"),
])
def test_bad_report_files(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(ToolkitError, match="bad.json: .*") as exc:
        read_report(bad)
    assert message in str(exc.value)
    out = run_compare(bad, "--output", tmp_path / "cmp")
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: ") and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert not (tmp_path / "cmp").exists()


def test_missing_report(tmp_path):
    out = run_compare(tmp_path / "nope.json")
    assert out.returncode == 2 and "nope.json: report not found" in out.stderr


def test_bad_gate_value(tmp_path):
    with pytest.raises(ToolkitError, match="--max-ppl-increase"):
        parse_fraction("five", "--max-ppl-increase")
    assert parse_fraction("5%", "x") == 0.05 and parse_fraction("0.02", "x") == 0.02


def test_pareto_front():
    # (latency, quality): b dominates c; a and b trade off; d is dominated by a
    pts = {"a": (100.0, 0.9), "b": (50.0, 0.8), "c": (60.0, 0.7), "d": (120.0, 0.85)}
    assert sorted(pareto_front(pts)) == ["a", "b"]


def test_records_sidecar_is_read_with_line_numbered_errors(tmp_path):
    from toolkit.evaluation.report import Report, read_records

    report, path = Report.model_construct(records_file="r.records.jsonl"), tmp_path / "r.json"
    assert read_records(path, report) == []  # sidecar gone: the plots that need it are skipped
    side = tmp_path / "r.records.jsonl"
    side.write_text('{"e2e_ms": 1.5}\n\n{"e2e_ms": 2.0}\n')
    assert read_records(path, report) == [{"e2e_ms": 1.5}, {"e2e_ms": 2.0}]
    side.write_text('{"e2e_ms": 1.5}\n{"e2e_ms": 2.')  # cut mid-write
    with pytest.raises(ToolkitError, match=r"r.records.jsonl:2: invalid JSON line"):
        read_records(path, report)
