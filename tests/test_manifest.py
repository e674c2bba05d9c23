import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.manifest import MANIFEST_NAME, RunRecord, atomic_dir, read_manifest, sha256_tree


def test_atomic_dir_replaces_only_on_success(tmp_path):
    final = tmp_path / "art"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("v1")
    assert (final / "a.txt").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as d:
            (d / "a.txt").write_text("half-written")
            raise RuntimeError("interrupted")
    assert (final / "a.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["art"]  # no temp dirs left
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("v2")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_unwritable_parent_is_a_clear_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ToolkitError, match="cannot create output directory|not writable"):
        with atomic_dir(f / "sub" / "art"):
            pass


def test_manifest_records_inputs_hashes_and_resources(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    rec = RunRecord("unit")
    rec.add_input("data", src)
    rec.add_input("hub_model", "org/some-model")
    rec.recipe = {"k": 1}
    with rec.timed("work"):
        pass
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "weights.bin").write_bytes(b"\0" * 1000)
        rec.write(d)
    m = read_manifest(out)
    assert m["inputs"]["data"]["sha256"] == sha256_tree(src)
    assert m["inputs"]["hub_model"] == {"id": "org/some-model"}
    assert m["size_on_disk_bytes"] == 1000 and m["peak_rss_mb"] > 0
    assert {"work", "wall"} <= set(m["timings_s"]) and "cpu" in m["hardware"]
    json.loads((out / MANIFEST_NAME).read_text())


def test_tree_hash_changes_with_content(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = sha256_tree(tmp_path)
    (tmp_path / "a").write_text("2")
    assert sha256_tree(tmp_path) != h1
