"""Train the reference model: a small Llama, from scratch, with the Hugging Face ``Trainer``.

Training data is a mix of two kinds of fixed-length windows:

* language modelling: the train split's documents concatenated (EOS-separated) and cut into ``seq_len``
  windows, loss on every token;
* answering from context: train-split QA pairs rendered with the tokenizer's chat template as
  ``system`` rule + ``user`` (numbered context documents, then the question) + ``assistant`` (the answer),
  loss on the answer and its EOS only. The gold document is shuffled among up to ``max_contexts - 1``
  distractors, as a retriever would return it, so the model learns to pick the right passage and quote it.
  Examples are packed greedily into windows (padding the remainder), never cut in half.

Quality is reported as validation perplexity next to a unigram baseline (train-split token frequencies with
add-one smoothing, scored on exactly the same validation tokens), so "the model learned something" is a
measured ratio rather than a bare number.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit.prompt import rag_messages

IGNORE = -100


def lm_windows(tokenizer, texts: Sequence[str], seq_len: int) -> list[dict[str, list[int]]]:
    from toolkit.modeling import token_windows

    return [{"input_ids": w, "labels": list(w), "attention_mask": [1] * seq_len}
            for w in token_windows(tokenizer, texts, seq_len)]


def chat_example(tokenizer, question: str, answer: str, contexts: Sequence[str]) -> tuple[list[int], list[int]]:
    """Token ids of one rendered conversation and its labels (prompt masked, answer + EOS learned)."""
    prompt = tokenizer.apply_chat_template(rag_messages(question, contexts), add_generation_prompt=True,
                                           tokenize=False)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def chat_windows(tokenizer, pairs: Sequence[dict], doc_text: dict[str, str], seq_len: int, max_contexts: int,
                 seed: int) -> tuple[list[dict[str, list[int]]], int]:
    """Pack chat examples into ``seq_len`` windows; returns (windows, number of examples used)."""
    rng = random.Random(seed)
    pool = sorted(doc_text)
    examples = []
    for pair in pairs:
        gold = doc_text[pair["doc_id"]]
        distractors = [doc_text[d] for d in rng.sample(pool, min(len(pool), max_contexts)) if d != pair["doc_id"]]
        contexts = [gold] + distractors[: rng.randrange(max_contexts)]
        while True:  # drop distractors until the example fits; skip it if the gold document alone does not
            rng.shuffle(contexts)
            ids, labels = chat_example(tokenizer, pair["question"], pair["answer"], contexts)
            if len(ids) <= seq_len or len(contexts) == 1:
                break
            contexts.remove(next(c for c in contexts if c is not gold))
        if len(ids) <= seq_len:
            examples.append((ids, labels))
    windows, ids_acc, lab_acc = [], [], []

    def flush() -> None:
        pad = seq_len - len(ids_acc)
        windows.append({"input_ids": ids_acc + [tokenizer.pad_token_id] * pad, "labels": lab_acc + [IGNORE] * pad,
                        "attention_mask": [1] * len(ids_acc) + [0] * pad})

    for ids, labels in examples:
        if len(ids_acc) + len(ids) > seq_len:
            flush()
            ids_acc, lab_acc = [], []
        ids_acc, lab_acc = ids_acc + ids, lab_acc + labels
    if ids_acc:
        flush()
    return windows, len(examples)


def unigram_perplexity(train_ids: Sequence[int], windows: Sequence[Sequence[int]], vocab_size: int) -> float:
    """Perplexity of add-one-smoothed train-split token frequencies on the tokens ``perplexity`` scores."""
    counts = [1] * vocab_size
    for t in train_ids:
        counts[t] += 1
    total = sum(counts)
    nll = n = 0
    for w in windows:
        for t in w[1:]:
            nll -= math.log(counts[t] / total)
            n += 1
    return math.exp(nll / n)


def build_model(tokenizer, dims: dict[str, Any], seed: int):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, **dims)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id)
    return model


def train(model, windows: Sequence[dict], work_dir: Path, steps: int, batch_size: int, grad_accum: int,
          learning_rate: float, warmup_steps: int, weight_decay: float, seed: int, bf16: bool) -> dict[str, Any]:
    """Run ``Trainer`` for ``steps`` optimiser steps over ``windows``; return its metrics."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator, set_seed

    set_seed(seed)
    args = TrainingArguments(
        output_dir=str(work_dir), max_steps=steps, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum, learning_rate=learning_rate, warmup_steps=warmup_steps,
        lr_scheduler_type="cosine", weight_decay=weight_decay, adam_beta2=0.98, max_grad_norm=1.0,
        logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", use_cpu=True, seed=seed,
        data_seed=seed, dataloader_num_workers=0, disable_tqdm=False, bf16=bf16,
    )
    dataset = Dataset.from_list(list(windows))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=default_data_collator)
    out = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"train_loss": round(out.training_loss, 4), "final_logged_loss": losses[-1] if losses else None,
            "train_runtime_s": round(out.metrics.get("train_runtime", 0.0), 1)}
