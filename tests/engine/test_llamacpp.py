"""llama.cpp as the second engine (issue 16).

Fast tests need no build: the llama-server command line from a profile, the profile validator, the one-line
errors (not built, no GGUF), the eval profile and the CPU flags of bench-engines. The slow tests use the real
build (``make setup-llamacpp``) and skip without it: export the tiny fixture to Q8_0 with llama.cpp's own
converter and quantizer, then serve it behind the real RAG endpoint and stream an answer.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from toolkit.engine import launch
from toolkit.engine.llamacpp import LlamaCppSettings, find_gguf, server_command
from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, SERVE_DIR
from toolkit.serving.profiles import engine_command, engine_environment, load_profile

BUILT = os.access(launch.LLAMACPP_DIR / "bin" / "llama-server", os.X_OK)
needs_build = pytest.mark.skipif(not BUILT, reason=f"llama.cpp not built ({launch.LLAMACPP_DIR}); "
                                 "run `make setup-llamacpp`")


@pytest.fixture
def fake_build(tmp_path, monkeypatch) -> Path:
    """A llama.cpp folder holding an executable named llama-server (never run): the command builder only
    checks that the tool is there."""
    tool = tmp_path / "llamacpp" / "bin" / "llama-server"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\nexit 1\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setattr(launch, "LLAMACPP_DIR", tmp_path / "llamacpp")
    return tool


@pytest.fixture
def gguf_dir(tmp_path) -> Path:
    d = tmp_path / "model-q8_0"
    d.mkdir()
    (d / "model.gguf").write_bytes(b"GGUF")  # the command builder does not read it; the server would
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"],
                                               "max_position_embeddings": 2048}))
    return d


def _value(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_server_command_maps_settings_to_llama_server_flags(fake_build, gguf_dir):
    settings = LlamaCppSettings(threads=2, threads_batch=3, parallel=4, batch_size=1024, ubatch_size=256,
                                extra_args={"flash-attn": "on", "mlock": True})
    cmd = server_command(gguf_dir, 8124, "smol", settings, max_model_len=1000, prefix_caching=False)
    assert cmd[0] == str(fake_build)
    assert _value(cmd, "--model") == str(gguf_dir / "model.gguf") and _value(cmd, "--alias") == "smol"
    assert _value(cmd, "--port") == "8124" and _value(cmd, "--host") == "127.0.0.1"
    assert (_value(cmd, "--threads"), _value(cmd, "--threads-batch"), _value(cmd, "--parallel")) == ("2", "3", "4")
    assert (_value(cmd, "--batch-size"), _value(cmd, "--ubatch-size")) == ("1024", "256")
    assert _value(cmd, "--ctx-size") == "4000"  # max_model_len per slot, 4 slots
    assert "--no-cache-prompt" in cmd and "--mlock" in cmd and _value(cmd, "--flash-attn") == "on"
    # unset knobs are left to llama.cpp; the context defaults to the checkpoint's, per slot
    cmd = server_command(gguf_dir, 8124, "smol", LlamaCppSettings(parallel=2), None, prefix_caching=True)
    assert "--threads" not in cmd and "--batch-size" not in cmd and "--no-cache-prompt" not in cmd
    assert _value(cmd, "--ctx-size") == "4096"


def test_shipped_llamacpp_profile_builds_a_llama_server_command(fake_build, gguf_dir):
    path = SERVE_DIR / "llamacpp.yaml"
    text = path.read_text()
    assert text.startswith("# ") and "make serve" in text and "make setup-llamacpp" in text
    profile = load_profile(path)
    assert profile.engine.kind == "llamacpp" and profile.engine.llamacpp.threads == 2
    cmd = engine_command(gguf_dir, 8125, "m", profile, extra={"seed": 7})
    assert cmd[0] == str(fake_build) and _value(cmd, "--parallel") == "4" and _value(cmd, "--seed") == "7"
    assert engine_environment(profile)["LD_LIBRARY_PATH"].split(os.pathsep)[0] == str(fake_build.parent)


@pytest.mark.parametrize("key, value", [("max_num_seqs", 8), ("dtype", "float32"), ("kv_cache_space_gib", 2),
                                        ("extra_args", {"enforce_eager": True})])
def test_profile_refuses_vllm_only_keys_under_llamacpp(tmp_path, key, value):
    p = tmp_path / "p.yaml"
    p.write_text(json.dumps({"engine": {"kind": "llamacpp", key: value}}))
    with pytest.raises(ToolkitError, match=rf"p.yaml: .*'{key}' is a vLLM setting"):
        load_profile(p)


def test_profile_refuses_llamacpp_settings_under_vllm(tmp_path):
    p = tmp_path / "p.yaml"
    p.write_text(json.dumps({"engine": {"llamacpp": {"threads": 2}}}))
    with pytest.raises(ToolkitError, match=r"'llamacpp' settings need kind: llamacpp"):
        load_profile(p)
    p.write_text(json.dumps({"device": "cuda", "engine": {"kind": "llamacpp"}}))
    with pytest.raises(ToolkitError, match=r"set device: cpu"):
        engine_command("m", 1, "m", load_profile(p))


def test_not_built_is_one_line_naming_the_make_target(tmp_path, monkeypatch, gguf_dir):
    monkeypatch.setattr(launch, "LLAMACPP_DIR", tmp_path / "absent")
    with pytest.raises(ToolkitError, match=r"llama.cpp is not built; run `make setup-llamacpp`") as err:
        server_command(gguf_dir, 1, "m", LlamaCppSettings(), None, False)
    assert "\n" not in str(err.value)
    # the same line from the CLI, as exit 2, before any work
    env = {**os.environ, "TOOLKIT_LLAMACPP_DIR": str(tmp_path / "absent")}
    proc = subprocess.run([sys.executable, "-m", "toolkit", "export-gguf", "--model", str(gguf_dir), "--type",
                           "q8_0", "--output", str(tmp_path / "out")], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "make setup-llamacpp" in proc.stderr and not (tmp_path / "out").exists()


def test_find_gguf_errors_name_the_directory(tmp_path):
    with pytest.raises(ToolkitError, match=r"not a hub id"):
        find_gguf(tmp_path / "missing")
    with pytest.raises(ToolkitError, match=rf"{tmp_path}: no .gguf file; .*export-gguf"):
        find_gguf(tmp_path)
    (tmp_path / "a.gguf").write_bytes(b"")
    assert find_gguf(tmp_path) == tmp_path / "a.gguf"
    (tmp_path / "b.gguf").write_bytes(b"")
    with pytest.raises(ToolkitError, match=r"2 .gguf files \(a.gguf, b.gguf\)"):
        find_gguf(tmp_path)


def test_export_gguf_type_rules(tmp_path, gguf_dir):
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "toolkit", "export-gguf", *args], cwd=REPO_ROOT,
                              capture_output=True, text=True)

    proc = cli("--model", str(gguf_dir))
    assert proc.returncode == 2 and "--type: required for a checkpoint directory" in proc.stderr
    proc = cli("--model", str(gguf_dir / "model.gguf"), "--type", "q8_0")
    assert proc.returncode == 2 and "already a GGUF" in proc.stderr


def test_eval_profile_keeps_vllm_flags_away_from_llamacpp(tmp_path):
    from toolkit.evaluation.cli import eval_profile
    from toolkit.evaluation.suite import load_suite

    suite = load_suite(REPO_ROOT / "eval" / "suites" / "smoke.yaml")
    assert suite.engine.extra_args  # smoke runs vLLM eagerly: a vLLM-only flag
    prof = load_profile(eval_profile(str(SERVE_DIR / "llamacpp.yaml"), suite, tmp_path))
    assert prof.engine.kind == "llamacpp" and prof.engine.extra_args == {} and prof.endpoint.cache_size == 0
    vllm = load_profile(eval_profile(str(SERVE_DIR / "cpu.yaml"), suite, tmp_path))
    assert vllm.engine.extra_args == suite.engine.extra_args


def test_bench_engines_tuning_flags_are_validated_and_written(fake_build, tmp_path, capsys):
    from toolkit.engine.bench_engines import build_parser, main, tuned_profiles

    assert main(["--only", "llamacpp", "--threads", "0", "--output", str(tmp_path)]) == 2
    assert "error: --threads: Input should be greater than or equal to 1" in capsys.readouterr().err
    assert main(["--only", "vllm", "--vllm-dtype", "float64", "--output", str(tmp_path)]) == 2
    assert "error: --vllm-dtype: " in capsys.readouterr().err

    args = build_parser().parse_args(["--threads", "1", "--threads-batch", "1", "--parallel", "8"])
    knobs = {"threads": args.threads, "threads_batch": args.threads_batch, "parallel": args.parallel}
    [(suffix, path)] = tuned_profiles(args.llamacpp_profile, "llamacpp", knobs, tmp_path)
    prof = load_profile(path)
    assert suffix == "" and path.name == "llamacpp-profile.yaml"  # one value each: no sweep, the plain name
    assert (prof.engine.llamacpp.threads, prof.engine.llamacpp.threads_batch, prof.engine.llamacpp.parallel) == (1, 1, 8)
    assert prof.engine.llamacpp.batch_size == load_profile(SERVE_DIR / "llamacpp.yaml").engine.llamacpp.batch_size


def test_bench_engines_sweeps_every_combination_of_listed_values(tmp_path):
    from toolkit.engine.bench_engines import build_parser, tuned_profiles

    args = build_parser().parse_args(["--threads", "1,2", "--parallel", "4,16", "--ubatch-size", "256",
                                      "--vllm-dtype", "bfloat16,float32", "--max-num-seqs", "16"])
    knobs = {"threads": args.threads, "parallel": args.parallel, "ubatch_size": args.ubatch_size}
    got = tuned_profiles(args.llamacpp_profile, "llamacpp", knobs, tmp_path)
    assert [s for s, _ in got] == ["-t1-p4", "-t1-p16", "-t2-p4", "-t2-p16"]  # the fixed ubatch is not named
    settings = [load_profile(p).engine.llamacpp for _, p in got]
    assert [(x.threads, x.parallel, x.ubatch_size) for x in settings] == [(1, 4, 256), (1, 16, 256), (2, 4, 256),
                                                                          (2, 16, 256)]
    vllm = tuned_profiles(args.vllm_profile, "vllm", {"dtype": args.vllm_dtype, "max_num_seqs": args.max_num_seqs},
                          tmp_path)
    assert [(s, load_profile(p).engine.dtype, load_profile(p).engine.max_num_seqs) for s, p in vllm] == [
        ("-bfloat16", "bfloat16", 16), ("-float32", "float32", 16)]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--threads", "one"])


def test_bench_engines_cpu_flags_are_the_present_ones():
    from toolkit.engine.bench_engines import cpu_flags
    from toolkit.hardware import ISA_FLAGS

    present = set(Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0].lstrip(" :").split())
    expected = [f for f in ISA_FLAGS if f in present]
    assert cpu_flags() == (" ".join(expected) if expected else "none of " + ", ".join(ISA_FLAGS))


# --- the real build -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_llama_gguf_source(tmp_path_factory) -> Path:
    """A tiny random Llama with SmolLM2's tokenizer (read from the shipped GGUF): llama.cpp's converter only
    takes BPE tokenizers whose pre-tokenizer it knows, which the fixture's freshly trained one is not."""
    import yaml
    from transformers import AutoTokenizer

    from tests.conftest import build_tiny_model
    from toolkit.reference.pretrained import locate_gguf

    recipe = yaml.safe_load((REPO_ROOT / "recipes" / "reference" / "default.yaml").read_text())["pretrained"]
    try:
        gguf = locate_gguf(recipe["package"], recipe["version"], recipe["file"])
    except ToolkitError as exc:
        pytest.skip(f"no SmolLM2 GGUF for its tokenizer: {exc}")
    tok_dir = tmp_path_factory.mktemp("smollm2-tokenizer")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tok_dir))
    return build_tiny_model("llama", tok_dir, tmp_path_factory.mktemp("tiny-llama-smol"), hidden_size=64,
                            intermediate_size=128, num_attention_heads=2, num_key_value_heads=1)


@pytest.fixture(scope="module")
def tiny_q8(tmp_path_factory, request) -> Path:
    """The tiny Llama exported to Q8_0 by llama.cpp's converter and quantizer (``toolkit export-gguf``)."""
    if not BUILT:
        pytest.skip("llama.cpp not built; run `make setup-llamacpp`")
    model = request.getfixturevalue("tiny_llama_gguf_source")
    out = tmp_path_factory.mktemp("gguf") / "tiny-q8_0"
    proc = subprocess.run([sys.executable, "-m", "toolkit", "export-gguf", "--model", str(model), "--type", "q8_0",
                           "--output", str(out)], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
@needs_build
def test_export_gguf_writes_a_q8_0_model_dir_with_manifest(tiny_q8):
    from toolkit.manifest import read_manifest
    from toolkit.reference.pretrained import gguf_file_type

    m = read_manifest(tiny_q8)
    assert m and m["results"]["file"] == "model.gguf" and m["recipe"]["type"] == "q8_0"
    assert gguf_file_type(tiny_q8 / "model.gguf") == m["results"]["gguf_file_type"]
    assert "Q8_0" in m["results"]["gguf_file_type"].upper()
    assert (tiny_q8 / "config.json").is_file() and (tiny_q8 / "tokenizer.json").is_file()
    assert not list(tiny_q8.glob("*.safetensors"))
    # transformers writes SmolLM2's GGUF tokenizer with byte_fallback; converted as it is, llama.cpp would take it
    # for a SentencePiece vocabulary and fail every request: the export must say byte-level BPE (gpt2)
    import gguf

    fields = gguf.GGUFReader(tiny_q8 / "model.gguf").fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"


@pytest.mark.slow
@needs_build
def test_gguf_model_dir_served_by_llama_server_behind_the_rag_endpoint(tiny_q8, small_index):
    from toolkit.serving.stack import running_stack

    with running_stack(tiny_q8, small_index, profile=SERVE_DIR / "llamacpp.yaml") as stack:
        assert stack.served_model_name == tiny_q8.name
        models = httpx.get(f"{stack.engine_url}/v1/models", timeout=30).json()
        assert tiny_q8.name in [m["id"] for m in models["data"]]
        with httpx.stream("POST", f"{stack.url}/v1/rag", json={"query": "How tall is Mount Everest?",
                          "max_tokens": 6, "min_tokens": 3, "temperature": 1.0, "stream": True}, timeout=300) as s:
            assert s.status_code == 200
            events = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        parsed = [json.loads(e) for e in events[:-1]]
        assert parsed[0]["type"] == "sources" and parsed[0]["sources"][0]["id"] == "everest"
        assert parsed[-1]["type"] == "done" and parsed[-1]["usage"]["completion_tokens"] >= 1
        assert parsed[-1]["usage"]["prompt_tokens"] > 20
        t = parsed[-1]["timings"]
        assert 0 < t["llm_ttft"] <= t["llm_total"] <= t["total"]


@pytest.mark.slow
@needs_build
def test_gguf_model_dir_loads_for_perplexity_as_the_weights_llama_cpp_serves(tiny_q8, tiny_llama_gguf_source):
    """``load_causal_lm`` passes ``gguf_file=`` for a GGUF directory: transformers dequantizes the Q8_0 file,
    which must match the source checkpoint up to Q8_0's rounding (one scale per 32 weights, 8 bits)."""
    import torch

    from toolkit.modeling import load_causal_lm

    got = load_causal_lm(tiny_q8, dtype=torch.float32).state_dict()
    want = load_causal_lm(tiny_llama_gguf_source, dtype=torch.float32).state_dict()
    name = "model.layers.0.mlp.down_proj.weight"
    err = (got[name] - want[name]).abs().max().item()
    assert 0 < err <= want[name].abs().max().item() / 127  # quantized, and within one Q8_0 step
