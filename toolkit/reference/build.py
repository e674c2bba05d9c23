"""``toolkit reference``: corpus → QA set → tokenizer → model → perplexity, into one atomic directory.

The whole reference directory is built in a temporary sibling and renamed into place at the end, so other
stages reading ``artifacts/reference`` never see a half-written corpus next to an old model. The top-level
manifest carries the corpus/QA counts, the validation perplexity with its unigram baseline, and per-phase
timings; ``tokenizer/`` and ``model/`` carry their own manifests, so either can be copied elsewhere with its
provenance. A re-run with the same recipe (and the same Python, whose docstrings are the corpus) over a
complete output only says it is up to date; ``--force`` rebuilds.
"""

from __future__ import annotations

import platform
import shutil
from pathlib import Path
from typing import Any

from toolkit.config import dump_recipe
from toolkit.errors import ToolkitError
from toolkit.jsonl import read_jsonl
from toolkit.manifest import RunRecord, atomic_dir, read_manifest
from toolkit.prompt import prompt_record
from toolkit.reference.recipe import ReferenceRecipe

PRETRAINED_OUTPUTS = ("docs.jsonl", "qa.jsonl", "splits/train.jsonl", "splits/validation.jsonl",
                      "splits/test.jsonl", "model/config.json", "model/model.safetensors", "model/tokenizer.json")
OUTPUTS = (*PRETRAINED_OUTPUTS, "tokenizer/tokenizer.json")  # a model trained from scratch has its tokenizer too


def outputs(recipe: ReferenceRecipe) -> tuple[str, ...]:
    return PRETRAINED_OUTPUTS if recipe.pretrained else OUTPUTS


def _python_version() -> str:
    return platform.python_version()


def up_to_date(out: Path, recipe: ReferenceRecipe) -> bool:
    """True when ``out`` holds every output of a build with this recipe on this Python version and corpus
    format (a corpus written before its documents carried metadata is rebuilt)."""
    from toolkit.reference.corpus import CORPUS_FORMAT

    manifest = read_manifest(out)
    return bool(
        manifest
        and manifest.get("recipe") == dump_recipe(recipe)
        and manifest.get("results", {}).get("python") == _python_version()
        and manifest.get("results", {}).get("corpus_format") == CORPUS_FORMAT
        and all((out / f).is_file() for f in outputs(recipe))
    )


def _add_input(record: RunRecord, name: str, path: Path, tmp: Path, final: Path) -> None:
    """Hash an input that lives in the temporary build dir, but record the path it will have after rename."""
    record.add_input(name, path)
    record.inputs[name]["path"] = str(final.resolve() / path.relative_to(tmp))


def build_corpus(recipe: ReferenceRecipe, tmp: Path, progress: bool) -> tuple[dict[str, Any], list[dict]]:
    from toolkit.reference.corpus import (
        CORPUS_FORMAT,
        build_docs,
        dump_stdlib,
        split_by_package,
        write_corpus,
        write_jsonl,
    )
    from toolkit.reference.qa import build_qa

    c = recipe.corpus
    pairs = dump_stdlib(c.modules, c.exclude, progress=progress)
    docs = build_docs(pairs, c.min_doc_chars, c.max_doc_chars)
    assignment = split_by_package(docs, c.validation_share, c.test_share, recipe.seed)
    split_stats = write_corpus(tmp, docs, assignment)
    qa = build_qa(docs, assignment, recipe.qa.min_answer_chars, recipe.qa.max_answer_chars)
    write_jsonl(tmp / "qa.jsonl", qa)
    qa_counts = {s: sum(1 for q in qa if q["split"] == s) for s in split_stats}
    if qa_counts["test"] < recipe.qa.min_test_pairs:
        raise ToolkitError(f"recipe field 'qa.min_test_pairs': only {qa_counts['test']} unambiguous QA pairs in "
                           f"the test split (need {recipe.qa.min_test_pairs}); raise 'corpus.test_share'")
    stats = {"corpus_format": CORPUS_FORMAT, "documents": len(docs), "splits": split_stats, "qa_pairs": qa_counts,
             "test_packages": sorted(p for p, s in assignment.items() if s == "test"),
             "validation_packages": sorted(p for p, s in assignment.items() if s == "validation")}
    return stats, qa


def build_reference(recipe: ReferenceRecipe, out: Path, recipe_path: Path, force: bool = False,
                    progress: bool = True) -> dict[str, Any]:
    """Build everything into ``out``; returns the top-level manifest (or the existing one when up to date)."""
    if not force and up_to_date(out, recipe):
        print(f"{out}: up to date with {recipe_path} (use --force to rebuild)")
        return read_manifest(out) or {}
    from toolkit.modeling import read_texts

    if recipe.pretrained:  # a missing package or file fails now, not after the corpus is built
        from toolkit.reference.pretrained import locate_gguf

        p = recipe.pretrained
        try:
            locate_gguf(p.package, p.version, p.file)
        except ToolkitError as exc:
            raise ToolkitError(f"{recipe_path}: {exc}") from None
    record = RunRecord("reference")
    record.recipe = dump_recipe(recipe)
    record.add_input("recipe", recipe_path)
    with atomic_dir(out) as tmp:
        with record.timed("corpus"):
            stats, qa = build_corpus(recipe, tmp, progress)
        _print_corpus(stats)

        train_texts = read_texts(tmp / "splits" / "train.jsonl")
        if recipe.pretrained:
            model_results = _convert_and_evaluate(recipe, tmp, train_texts, record, progress)
        else:
            model_results = _train_from_scratch(recipe, tmp, out, train_texts, qa, record, progress)
        record.results = {"python": _python_version(), **stats, "model": model_results}
        record.write(tmp)
    print(f"reference artifacts written to {out}")
    return read_manifest(out) or {}


def _train_from_scratch(recipe: ReferenceRecipe, tmp: Path, out: Path, train_texts: list[str], qa: list[dict],
                        record: RunRecord, progress: bool) -> dict[str, Any]:
    from toolkit.reference.tokenizer import train_tokenizer

    with record.timed("tokenizer"):
        tok_record = RunRecord("reference-tokenizer")
        tok_record.recipe = dump_recipe(recipe.tokenizer)
        _add_input(tok_record, "train_split", tmp / "splits" / "train.jsonl", tmp, out)
        tokenizer = train_tokenizer(train_texts, recipe.tokenizer.vocab_size, tmp / "tokenizer",
                                    model_max_length=recipe.tokenizer.model_max_length)
        tok_record.results = {"vocab_size": len(tokenizer)}
        tok_record.write(tmp / "tokenizer")
    print(f"tokenizer: byte-level BPE, {len(tokenizer)} tokens ({record.timings['tokenizer']:.1f} s)")
    return _train_and_evaluate(recipe, tmp, out, tokenizer, train_texts, qa, record, progress)


def _convert_and_evaluate(recipe: ReferenceRecipe, tmp: Path, train_texts: list[str], record: RunRecord,
                          progress: bool) -> dict[str, Any]:
    """The pretrained model (converted once, cached) linked into ``model/``, scored like a trained one."""
    from toolkit.modeling import load_tokenizer
    from toolkit.reference import train as tr
    from toolkit.reference.pretrained import converted_checkpoint, link_tree

    p, t = recipe.pretrained, recipe.training
    with record.timed("conversion"):
        src, conversion = converted_checkpoint(p.package, p.version, p.file, p.save_dtype)
        link_tree(src, tmp / "model")
    mrec = RunRecord("reference-model")
    mrec.recipe = {"pretrained": dump_recipe(p), "training": dump_recipe(t), "seed": recipe.seed}
    mrec.inputs["gguf"] = conversion["inputs"]["gguf"]
    tokenizer = load_tokenizer(tmp / "model")
    conv = conversion["results"]
    print(f"model: {conv['architecture']} {conv['parameters'] / 1e6:.1f}M parameters, {conv['num_hidden_layers']} "
          f"layers, hidden {conv['hidden_size']}; weights {conv['gguf_file_type']} upstream, saved in {p.save_dtype}")
    with record.timed("evaluation"), mrec.timed("evaluation"):
        train_windows = tr.lm_windows(tokenizer, train_texts, t.seq_len)  # the unigram baseline's counts
        ppl, unigram, n_windows = _validation_perplexity(recipe, tmp, tokenizer, train_windows, progress)
    results = {
        "source": "pretrained", **{k: conv[k] for k in ("architecture", "parameters", "gguf_file_type")},
        "saved_dtype": p.save_dtype, "conversion_s": conversion["timings_s"]["conversion"],
        "conversion_cache": str(src), "validation_tokens": n_windows * (t.seq_len - 1),
        "validation_perplexity": round(ppl, 3), "unigram_validation_perplexity": round(unigram, 3),
        "prompt": prompt_record(),
    }
    mrec.results = results
    mrec.write(tmp / "model")
    print(f"validation perplexity: model {ppl:.2f} vs unigram baseline {unigram:.2f} "
          f"({n_windows} windows x {t.seq_len} tokens)")
    return results


def _validation_perplexity(recipe: ReferenceRecipe, tmp: Path, tokenizer, train_windows: list[dict],
                           progress: bool) -> tuple[float, float, int]:
    """Perplexity of ``model/`` as other stages load it, and a unigram baseline (token counts of
    ``train_windows``) on the same tokens."""
    from toolkit.hardware import compute_dtype
    from toolkit.modeling import load_causal_lm, perplexity, read_texts, stored_dtype, token_windows
    from toolkit.reference import train as tr

    t = recipe.training
    windows = token_windows(tokenizer, read_texts(tmp / "splits" / "validation.jsonl"), t.seq_len,
                            max_windows=t.eval_windows)
    # the dtype eval computes in (compute_dtype): fp32 where bf16 is emulated (AVX2: 193 s a batch in bf16)
    saved = load_causal_lm(tmp / "model", dtype=compute_dtype(stored_dtype(tmp / "model")))
    ppl = perplexity(saved, windows, progress="validation perplexity" if progress else None)
    train_ids = [i for w in train_windows for i in w["input_ids"]]
    return ppl, tr.unigram_perplexity(train_ids, windows, len(tokenizer)), len(windows)


def _train_and_evaluate(recipe: ReferenceRecipe, tmp: Path, out: Path, tokenizer, train_texts: list[str],
                        qa: list[dict], record: RunRecord, progress: bool) -> dict[str, Any]:
    import torch

    from toolkit.reference import train as tr

    t, m = recipe.training, recipe.model
    docs = {d["id"]: d["text"] for d in read_jsonl(tmp / "docs.jsonl")}
    train_pairs = [q for q in qa if q["split"] == "train"][: t.qa_examples]
    train_doc_text = {q["doc_id"]: docs[q["doc_id"]] for q in qa if q["split"] == "train"}
    model_dir = tmp / "model"
    mrec = RunRecord("reference-model")
    mrec.recipe = {"model": dump_recipe(m), "training": dump_recipe(t), "seed": recipe.seed}
    _add_input(mrec, "train_split", tmp / "splits" / "train.jsonl", tmp, out)
    _add_input(mrec, "qa", tmp / "qa.jsonl", tmp, out)
    _add_input(mrec, "tokenizer", tmp / "tokenizer", tmp, out)
    with record.timed("training"), mrec.timed("training"):
        lm = tr.lm_windows(tokenizer, train_texts, t.seq_len)
        chat, n_chat = tr.chat_windows(tokenizer, train_pairs, train_doc_text, t.seq_len, t.max_contexts, recipe.seed)
        dims = m.model_dump(exclude={"save_dtype"})
        model = tr.build_model(tokenizer, dims, recipe.seed)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: Llama {n_params / 1e6:.1f}M parameters; training on {len(lm)} text windows + {len(chat)} "
              f"chat windows ({n_chat} QA examples) of {t.seq_len} tokens for {t.max_steps} steps")
        metrics = tr.train(model, lm + chat, tmp / ".trainer", t.max_steps, t.batch_size, t.grad_accum,
                           t.learning_rate, t.warmup_steps, t.weight_decay, recipe.seed, t.bf16_autocast)
        shutil.rmtree(tmp / ".trainer", ignore_errors=True)
        model.to(getattr(torch, m.save_dtype)).save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
    with record.timed("evaluation"), mrec.timed("evaluation"):
        ppl, unigram, n_windows = _validation_perplexity(recipe, tmp, tokenizer, lm, progress)
    tokens_seen = t.max_steps * t.batch_size * t.grad_accum * t.seq_len
    results = {
        "source": "scratch", "parameters": n_params, "saved_dtype": m.save_dtype, "torch_threads": torch.get_num_threads(), **metrics,
        "train_tokens_seen": tokens_seen, "train_tokens_per_s": round(tokens_seen / max(metrics["train_runtime_s"], 1e-9)),
        "lm_windows": len(lm), "chat_windows": len(chat), "chat_examples": n_chat,
        "validation_tokens": n_windows * (t.seq_len - 1),
        "validation_perplexity": round(ppl, 3), "unigram_validation_perplexity": round(unigram, 3),
        "prompt": prompt_record(),
    }
    mrec.results = results
    mrec.write(model_dir)
    print(f"validation perplexity: model {ppl:.2f} vs unigram baseline {unigram:.2f} "
          f"({n_windows} windows x {t.seq_len} tokens, model saved in {m.save_dtype})")
    return results


def _print_corpus(stats: dict[str, Any]) -> None:
    s, q = stats["splits"], stats["qa_pairs"]
    print(f"corpus: {stats['documents']} documents; " + ", ".join(
        f"{k} {v['documents']} docs / {v['packages']} modules / {q[k]} QA" for k, v in s.items()))
