import pytest

from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl


def test_rows_and_line_numbered_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": 1, "text": "x"}\n\n{"id": 2, "text": "y"}\n')
    assert [r["id"] for r in read_jsonl(p, require={"text": str, "id": object})] == [1, 2]
    p.write_text('{"id": 1}\n\n{"id": 2, "text": 3}\n')
    with pytest.raises(ToolkitError, match=r"a.jsonl:1: missing string field 'text'"):
        read_jsonl(p, require={"text": str})
    p.write_text('{"text": "x"}\n[1, 2]\n')
    with pytest.raises(ToolkitError, match=r"a.jsonl:2: expected a JSON object"):
        read_jsonl(p)
    p.write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(ToolkitError, match=r"a.jsonl:2: invalid JSON line"):
        read_jsonl(p)
    with pytest.raises(ToolkitError, match="nope.jsonl: build it first"):
        read_jsonl(tmp_path / "nope.jsonl", "build it first")
