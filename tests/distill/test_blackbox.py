"""Black-box distillation on the tiny teacher: answers from a real vLLM run (cached), the student fine-tuned
on them; and the OpenAI-compatible path against a small local HTTP server that answers with the teacher."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from toolkit.cli import main
from toolkit.distill.blackbox import teacher_answers
from toolkit.distill.recipe import BlackboxSpec
from toolkit.manifest import read_manifest

PROMPTS = ["What does json.dumps do?", "Explain functools.partial.", "How do I join paths with pathlib?",
           "What is a regular expression?"]


@pytest.fixture
def prompts_file(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in PROMPTS[:3])
                 + json.dumps({"messages": [{"role": "user", "content": PROMPTS[3]}]}) + "\n")
    return p


@pytest.mark.slow
def test_blackbox_sft_with_vllm_teacher(tiny_llama, distill_texts, prompts_file, tmp_path):
    cache = tmp_path / "cache"
    bb = {"prompts": str(prompts_file), "max_new_tokens": 8, "min_new_tokens": 8, "cache_dir": str(cache),
          "max_model_len": 256, "enforce_eager": True}  # four prompts: compiling would cost more than it saves
    recipe = tmp_path / "bb.yaml"
    recipe.write_text(yaml.safe_dump({
        "method": "blackbox-sft",
        "data": {"validation": str(distill_texts[1]), "seq_len": 64, "max_validation_windows": 2},
        "blackbox": bb,
        "training": {"max_steps": 6, "batch_size": 4, "learning_rate": 3.0e-3, "logging_steps": 1,
                     "warmup_ratio": 0.0, "lr_scheduler": "constant"},
    }))
    out = tmp_path / "bb-student"
    assert main(["distill", "--recipe", str(recipe), "--teacher", str(tiny_llama), "--output", str(out)]) == 0

    m = read_manifest(out)
    r = m["results"]
    assert r["method"] == "blackbox-sft" and r["steps"] == 6 and r["train_examples"] == 4
    assert r["teacher_answers"]["prompts"] == 4 and r["teacher_answers"]["empty"] == 0
    losses = [e["loss"] for e in r["log_history"] if "loss" in e]
    assert losses[-1] < losses[0], losses
    assert "loss_kd" not in r["final_losses"]  # black-box: text only, CE on the teacher's answers

    # the cache: jsonl + manifest; a second request is served from it without starting vLLM
    entry = next(cache.iterdir())
    rows = [json.loads(line) for line in (entry / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(r["answer"] for r in rows)
    assert read_manifest(entry)["stage"] == "distill-teacher-answers"
    from toolkit.distill.data import load_prompts

    answers, again = teacher_answers(tiny_llama, load_prompts(prompts_file), BlackboxSpec(**bb))
    assert again == entry and answers == [r["answer"] for r in rows]


class _TeacherHandler(BaseHTTPRequestHandler):
    """Minimal OpenAI ``/v1/chat/completions`` backed by the tiny teacher (transformers greedy generate)."""

    model = tok = None

    def do_POST(self):  # noqa: N802 (http.server API)
        import torch

        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        ids = self.tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)["input_ids"]
        with torch.no_grad():
            out = self.model.generate(ids, max_new_tokens=body["max_tokens"], min_new_tokens=body["max_tokens"],
                                      do_sample=False)
        text = self.tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_compatible_teacher(tiny_llama, prompts_file, tmp_path):
    from toolkit.distill.data import load_prompts
    from toolkit.errors import ToolkitError
    from toolkit.modeling import load_causal_lm, load_tokenizer

    _TeacherHandler.model, _TeacherHandler.tok = load_causal_lm(tiny_llama), load_tokenizer(tiny_llama)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TeacherHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        spec = BlackboxSpec(source="openai", url=url, api_model="tiny", max_new_tokens=6, concurrency=2,
                            cache_dir=str(tmp_path / "cache"))
        convs = load_prompts(prompts_file)
        answers, entry = teacher_answers(tiny_llama, convs, spec)
        assert len(answers) == 4 and all(a.strip() for a in answers)
        assert read_manifest(entry)["inputs"]["teacher"] == {"id": url}
        bad = spec.model_copy(update={"url": url.replace("/v1", "/nope"), "cache_dir": str(tmp_path / "c2")})
        with pytest.raises(ToolkitError, match="HTTP 404"):
            teacher_answers(tiny_llama, convs, bad)
    finally:
        server.shutdown()
