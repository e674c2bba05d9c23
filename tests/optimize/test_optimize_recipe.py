"""Optimize recipes, command-line overrides, the search space and the trial store: bad input is one line naming
the field or file."""

from __future__ import annotations

import argparse
import hashlib
import json

import pytest
import yaml

from toolkit.errors import ToolkitError
from toolkit.optimize.cli import overrides
from toolkit.optimize.recipe import (
    MIN_BUDGET_S,
    load_optimize_recipe,
    parse_budget,
    parse_quality,
)
from toolkit.optimize.space import Config, configs, stack_key
from toolkit.optimize.trials import TrialStore
from toolkit.paths import RECIPES_DIR

DEFAULT = RECIPES_DIR / "optimize" / "default.yaml"


def write(tmp_path, data) -> str:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_the_default_recipe_loads_and_its_header_shows_the_make_line():
    r = load_optimize_recipe(DEFAULT)
    assert r.budget_s == 3600 and r.quality.ppl_increase == pytest.approx(0.03) and r.quality.f1_drop == 0.02
    text = DEFAULT.read_text()
    assert "make optimize MODEL=" in text.split("\nname:")[0]
    # every axis says what it searches, on its own line
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if not line.startswith("#")}
    for axis in type(r.space).model_fields:
        assert "#" in lines[axis], axis


def test_every_shipped_recipe_loads_and_opens_with_its_make_line():
    for path in sorted((RECIPES_DIR / "optimize").glob("*.yaml")):
        r = load_optimize_recipe(path)
        assert "make optimize" in path.read_text().split("\nname:")[0], path
        assert r.confirm.pairs >= 2 and r.space.variants[0] == "artifacts/reference/model", path


@pytest.mark.parametrize("text,seconds", [("60m", 3600), ("90s", 90), ("1.5h", 5400), ("2", 120), ("10 min", 600)])
def test_budgets(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text,msg", [("soon", "not a duration"), ("30s", "too small for one trial")])
def test_bad_budgets(text, msg):
    with pytest.raises(ToolkitError, match=msg):
        parse_budget(text)
    assert MIN_BUDGET_S == 60


@pytest.mark.parametrize("data,field", [
    ({"name": "x", "space": {"variants": ["m"], "max_num_seq": [1]}}, "space.max_num_seq"),  # unknown knob
    ({"name": "x", "space": {"variants": ["m"]}, "axis": 1}, "axis"),
    ({"name": "x", "space": {"variants": []}}, "space.variants"),
    ({"name": "x", "space": {"variants": ["m"], "top_k": [0]}}, "space.top_k"),
    ({"name": "x", "space": {"variants": ["m"], "max_num_seqs": [4, 4]}}, "space.max_num_seqs"),
    ({"name": "x", "space": {"variants": ["m"]}, "budget": "10s"}, "budget"),
    ({"name": "x", "space": {"variants": ["m"]}, "quality": {"ppl_increase": "lots"}}, "quality.ppl_increase"),
    ({"name": "a/b", "space": {"variants": ["m"]}}, "name"),
])
def test_bad_recipes_name_the_field(tmp_path, data, field):
    path = write(tmp_path, data)
    with pytest.raises(ToolkitError) as e:
        load_optimize_recipe(path)
    assert f"field '{field}'" in str(e.value) and path in str(e.value) and "\n" not in str(e.value)


def test_command_line_overrides_win_and_are_validated(tmp_path):
    path = write(tmp_path, {"name": "x", "space": {"variants": ["m"]}})
    args = argparse.Namespace(model="a, b", slo="e2e_p95:2000", quality="f1_drop:0.05,ppl_increase:10%",
                              budget="5m", index=None, name=None)
    r = load_optimize_recipe(path, overrides(args))
    assert r.space.variants == ["a", "b"] and r.slo == "e2e_p95:2000" and r.budget_s == 300
    assert r.quality.f1_drop == 0.05 and r.quality.ppl_increase == pytest.approx(0.10)
    with pytest.raises(ToolkitError, match="--quality: 'f1:0.1'"):
        parse_quality("f1:0.1")
    with pytest.raises(ToolkitError, match="budget"):
        load_optimize_recipe(path, overrides(argparse.Namespace(model=None, slo=None, quality=None, budget="1s",
                                                                index=None, name=None)))


def test_space_is_every_combination_baseline_first_and_top_k_shares_a_stack(tmp_path):
    r = load_optimize_recipe(write(tmp_path, {"name": "x", "space": {
        "variants": ["m1", "m2"], "max_num_seqs": [None, 4], "top_k": [5, 3]}}))
    cs = configs(r.space)
    assert len(cs) == 8 and cs[0] == Config("m1", None, False, None, 5)
    assert len({c.id for c in cs}) == 8 and len({stack_key(c) for c in cs}) == 4
    assert Config("m1", 4, True, 512, 3).label() == "m1 seqs=4 prefix=on batched=512 top_k=3"
    r = load_optimize_recipe(write(tmp_path, {"name": "x", "space": {
        "variants": ["m1"], "dtype": [None, "float32"], "kv_cache_space_gib": [None, 2], "top_k": [5, 3]}}))
    cs = configs(r.space)  # dtype and the KV cache restart the engine; top_k does not
    assert len(cs) == 8 and len({stack_key(c) for c in cs}) == 4 and cs[0] == Config("m1")
    assert Config("m1", dtype="float32", kv_cache_space_gib=2.0, top_k=3).label() == "m1 dtype=float32 kv=2GiB top_k=3"


def test_engine_axes_reach_the_serve_profile(tmp_path):
    from toolkit.evaluation.suite import load_suite
    from toolkit.optimize.space import serve_profile
    from toolkit.paths import REPO_ROOT
    from toolkit.serving.profiles import load_profile

    r = load_optimize_recipe(write(tmp_path, {"name": "x", "space": {"variants": ["m1"]}}))
    suite = load_suite(REPO_ROOT / "eval" / "suites" / "smoke.yaml")
    c = Config("m1", max_num_seqs=4, enable_prefix_caching=True, max_num_batched_tokens=256, top_k=3,
               dtype="float32", kv_cache_space_gib=2.0)
    prof = load_profile(serve_profile(r, suite, c, tmp_path))
    e = prof.engine
    assert (e.max_num_seqs, e.enable_prefix_caching, e.dtype, e.kv_cache_space_gib) == (4, True, "float32", 2.0)
    assert e.extra_args == {"enforce_eager": True, "max_num_batched_tokens": 256} and prof.endpoint.top_k == 3
    assert prof.endpoint.cache_size == 0  # measured with the hot-query cache off, as toolkit eval does
    assert prof.retrieval.embedding_backend is None
    c = Config("m1", embedding_backend="onnx-int8")
    assert load_profile(serve_profile(r, suite, c, tmp_path)).retrieval.embedding_backend == "onnx-int8"
    assert c.label() == "m1 embed=onnx-int8 top_k=5" and stack_key(c) != stack_key(Config("m1"))
    c = Config("m1", index="artifacts/indexes/hnsw", ef_search=64, nprobe=8, kv_cache_dtype="fp8")
    prof = load_profile(serve_profile(r, suite, c, tmp_path))
    assert (prof.retrieval.ef_search, prof.retrieval.nprobe, prof.engine.kv_cache_dtype) == (64, 8, "fp8")
    assert c.label() == "m1 index=hnsw nprobe=8 ef=64 kv_dtype=fp8 top_k=5"
    # unset later axes leave the id as the first version computed it (its five fields), so old trials resume
    first = {"variant": "m1", "max_num_seqs": None, "enable_prefix_caching": False, "max_num_batched_tokens": None,
             "top_k": 5}
    assert Config("m1").id == hashlib.sha256(json.dumps(first, sort_keys=True).encode()).hexdigest()[:12]


def test_trial_store_round_trips_and_refuses_another_context(tmp_path):
    store = TrialStore(tmp_path / "opt")
    store.check_context({"slo": {"e2e_ms": 2000.0}})
    store.check_context({"slo": {"e2e_ms": 2000.0}})  # the same: fine
    store.save_trial({"rung": 1, "config_id": "abc", "status": "done", "value": 4})
    store.save_screen({"variant": "m1", "ppl": 12.0})
    assert store.trials() == {(1, "abc"): {"rung": 1, "config_id": "abc", "status": "done", "value": 4}}
    assert store.screen("m1")["ppl"] == 12.0 and store.screen("m2") is None
    store.save_trial({"rung": 0, "config_id": "abc", "status": "done", "value": 2, "f1": 0.4})
    assert store.trials()[(1, "abc")]["f1"] == 0.4  # rung 1 carries the rung-0 F1
    (tmp_path / "opt" / "trials" / "r0-abc.json").unlink()
    assert not list((tmp_path / "opt" / "trials").glob("*.tmp*"))
    with pytest.raises(ToolkitError, match=r"other settings \(slo\)"):
        store.check_context({"slo": {"e2e_ms": 1000.0}})
    (tmp_path / "opt" / "trials" / "r0-bad.json").write_text("{not json")
    with pytest.raises(ToolkitError, match="r0-bad.json: unreadable trial record"):
        store.trials()
    assert json.loads((tmp_path / "opt" / "trials" / "context.json").read_text()) == {"slo": {"e2e_ms": 2000.0}}


def test_a_gguf_variant_is_served_by_llamacpp_with_only_the_knobs_it_has(tmp_path):
    from toolkit.evaluation.suite import load_suite
    from toolkit.optimize.space import engine_kind, serve_profile
    from toolkit.paths import REPO_ROOT
    from toolkit.serving.profiles import load_profile

    gguf = tmp_path / "model-q8_0"
    gguf.mkdir()
    (gguf / "model.gguf").write_bytes(b"GGUF")  # only the layout matters here: nothing loads it
    (gguf / "config.json").write_text("{}")
    assert engine_kind(gguf) == "llamacpp" and engine_kind(tmp_path) == "vllm"
    r = load_optimize_recipe(write(tmp_path, {"name": "x", "space": {
        "variants": ["m1", str(gguf)], "max_num_seqs": [None, 8], "dtype": [None, "float32"], "top_k": [5, 3]}}))
    cs = configs(r.space)
    assert len([c for c in cs if c.variant == "m1"]) == 8
    mine = [c for c in cs if c.variant == str(gguf)]  # the vLLM axes collapse: top_k only
    assert mine == [Config(str(gguf), top_k=5), Config(str(gguf), top_k=3)]
    assert mine[0].label() == "model-q8_0 llama.cpp top_k=5"
    suite = load_suite(REPO_ROOT / "eval" / "suites" / "smoke.yaml")
    prof = load_profile(serve_profile(r, suite, Config(str(gguf), enable_prefix_caching=True, top_k=3), tmp_path))
    assert prof.engine.kind == "llamacpp" and prof.engine.enable_prefix_caching is True
    assert prof.engine.extra_args == {} and prof.engine.llamacpp.parallel >= 1 and prof.endpoint.top_k == 3
