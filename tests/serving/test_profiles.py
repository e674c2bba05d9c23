from pathlib import Path

import pytest

from toolkit.errors import ToolkitError
from toolkit.paths import SERVE_DIR
from toolkit.serving.profiles import engine_command, engine_environment, load_profile


@pytest.mark.parametrize("name", ["cpu.yaml", "cuda.yaml", "multi-gpu.yaml"])
def test_shipped_profiles_validate_and_open_with_a_comment(name):
    path = SERVE_DIR / name
    assert path.read_text().startswith("# ") and "make serve" in path.read_text()
    profile = load_profile(path)
    cmd = engine_command("m", 8123, "m", profile)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--port") + 1] == "8123" and cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_profile_flags_map_to_vllm():
    cpu = load_profile(SERVE_DIR / "cpu.yaml")
    cmd = engine_command("m", 8000, "m", cpu)
    assert "--no-enable-prefix-caching" in cmd and "--gpu-memory-utilization" not in cmd
    assert engine_environment(cpu) == {"VLLM_CPU_KVCACHE_SPACE": "1"}
    cuda = load_profile(SERVE_DIR / "cuda.yaml")
    cmd = engine_command("m", 8000, "m", cuda, extra={"enable_prefix_caching": True})
    assert cmd[cmd.index("--attention-backend") + 1] == "FLASH_ATTN" and "--enable-prefix-caching" in cmd
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.85"


def test_bad_profiles_name_file_and_field(tmp_path: Path):
    p = tmp_path / "p.yaml"
    p.write_text("device: cpu\nengine:\n  kv_cache_spce_gib: 1\n")
    with pytest.raises(ToolkitError, match=r"p.yaml: field 'engine.kv_cache_spce_gib': unknown key"):
        load_profile(p)
    p.write_text("device: tpu\n")
    with pytest.raises(ToolkitError, match=r"field 'device'"):
        load_profile(p)
    p.write_text("endpoint:\n  top_k: 0\n")
    with pytest.raises(ToolkitError, match=r"field 'endpoint.top_k'"):
        load_profile(p)


def test_serve_cli_fails_fast_on_bad_input(tmp_path, capsys, tiny_llama):
    from toolkit.cli import main

    assert main(["serve", "--model", str(tmp_path / "nope")]) == 2
    assert "--model" in capsys.readouterr().err
    assert main(["serve", "--model", str(tiny_llama), "--index", str(tmp_path / "noindex")]) == 2
    assert "index directory not found" in capsys.readouterr().err
    bad = tmp_path / "p.yaml"
    bad.write_text("engine:\n  dtype: int3\n")
    assert main(["serve", "--model", str(tiny_llama), "--profile", str(bad)]) == 2
    assert "field 'engine.dtype'" in capsys.readouterr().err
    named = tmp_path / "named.yaml"  # without --model, the profile's `model` is served
    named.write_text(f"model: {tmp_path / 'from-profile'}\n")
    assert main(["serve", "--profile", str(named)]) == 2
    assert "from-profile: no such directory" in capsys.readouterr().err
