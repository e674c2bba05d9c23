#!/usr/bin/env python3
"""CUDA evidence in one run: ``python scripts/gpu_check.py [--output F] [--budget-s S] [--quick]`` (``make gpu-check``).

Needs torch only (plus transformers, datasets, llmcompressor for d). Writes one file in the results schema
``toolkit.results/1`` via the repo's ``toolkit/results.py``, or the inline writer below where that does not import.
a. matmul, square n x n, 2 n^3 flops: FP32, TF32 (fp32 operands, ``set_float32_matmul_precision("high")``), BF16,
   FP16, FP8 e4m3 (``torch._scaled_mm``, scale 1, bf16 out; compute capability >= 8.9); error ||C - C64||_F /
   ||C64||_F against the float64 product of the same fp32 operands, at the smallest n.
b. ``scaled_dot_product_attention`` (bf16, causal) on the flash backend only vs the math backend only.
c. exact nearest neighbours: 1M x 384 unit vectors, fp32 with TF32 off, Q X^T + ``topk`` (brute force: exact by
   construction), queries/s at batch 1 and 64; queries are stored vectors plus 1% noise, so recall@1 of that
   planted neighbour checks the search itself.
d. GPTQ W4A16 (llm-compressor ``oneshot``) of a random small Llama built here, when llmcompressor imports.
Timing: two warm-up calls, then per repeat ``iters`` calls between two CUDA events read after synchronize;
``--repeats`` give each figure's mean, 95% CI and CV. Each section runs in its own try/except (errors recorded
under ``sections``); after ``--budget-s`` nothing new starts, SIGALRM at budget + 60 s interrupts a hang. Exit 0,
1 if a section failed. Without CUDA: one line, exit 0, nothing written (a CPU run must not replace GPU evidence).
``--cpu-smoke``: toy sizes on the CPU, for the tests.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8")
# Two-sided 95% Student t quantiles for df = 1..30 (inline writer only; toolkit.stats computes them exactly).
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
       2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


class Skip(Exception):
    """A section that cannot run here; the message is the reason."""


# --- inline writer: toolkit/results.py's schema where the toolkit does not import ---------------------------
def _pct(xs: list[float], q: float) -> float:  # linear interpolation between order statistics (numpy default)
    xs, pos = sorted(xs), (len(xs) - 1) * q / 100
    return xs[int(pos)] + (xs[min(int(pos) + 1, len(xs) - 1)] - xs[int(pos)]) * (pos - int(pos))


def _interval(xs: list[float]) -> dict:
    n, mean = len(xs), sum(xs) / max(len(xs), 1)
    sd = (sum((x - mean) ** 2 for x in xs) / (n - 1)) ** 0.5 if n > 1 else None
    half = None if sd is None else (T95[n - 2] if n <= 31 else 1.96) * sd / n ** 0.5
    return {"mean": mean if n else None, "ci_low": None if sd is None else mean - half,
            "ci_high": None if sd is None else mean + half, "cv": sd / abs(mean) if sd is not None and mean else None,
            "n": n, "values": xs}


def _hardware() -> dict:
    import importlib.metadata as md

    import torch

    info: dict[str, str] = {}
    for line in (Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else "").splitlines():
        info.setdefault(line.partition(":")[0].strip(), line.partition(":")[2].strip())  # first processor's
    flags = set(info.get("flags", "").split())
    props = [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]
    versions = {"python": platform.python_version()}
    for lib in ("torch", "transformers", "triton", "llmcompressor", "compressed-tensors"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[lib] = md.version(lib)
    return {"cpu": {"model": info.get("model name", platform.processor()), "arch": platform.machine(),
                    "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                    "isa": {f: f in flags for f in ISA_FLAGS}},
            "cuda": [{"name": p.name, "compute_capability": f"{p.major}.{p.minor}",
                      "memory_gb": round(p.total_memory / 2**30, 1)} for p in props],
            "device": "cuda" if props else "cpu", "versions": versions}


class InlineRun:
    """Same ``add``/``write`` and file layout as :class:`toolkit.results.BenchRun`."""

    def __init__(self, bench: str, config: dict | None = None) -> None:
        self.bench, self.config, self.metrics, self._t0 = bench, dict(config or {}), [], time.perf_counter()
        self.env = {"hardware": _hardware(), "load_avg_start": list(os.getloadavg()),
                    "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def add(self, name, unit, *, value=None, samples=None, repeats=None, labels=None, definition="") -> dict:
        if "batch_size" in (labels or {}) and "concurrency" in labels:
            raise ValueError(f"{name}: a metric is offline (batch_size) or online (concurrency), not both")
        m = {"name": name, "unit": unit, "value": value, "summary": None, "interval": None,
             "labels": dict(labels or {}), "definition": definition}
        if samples is not None:
            xs = [float(v) for v in samples]
            m["summary"] = {"mean": sum(xs) / len(xs) if xs else None,
                            **{f"p{q}": _pct(xs, q) if xs else None for q in (50, 90, 95, 99)}, "n": len(xs)}
        if repeats is not None:
            m["interval"] = _interval([float(v) for v in repeats])
            m["value"] = m["interval"]["mean"] if value is None else value
        self.metrics.append(m)
        return m

    def to_json(self, extra: dict | None = None) -> dict:
        env = {**self.env, "load_avg_end": list(os.getloadavg()), "wall_s": round(time.perf_counter() - self._t0, 2)}
        return {"schema": "toolkit.results/1", "bench": self.bench, "config": self.config, "environment": env,
                "metrics": list(self.metrics), **(extra or {})}

    def write(self, path, extra: dict | None = None) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(self.to_json(extra), indent=2, default=str) + "\n")
        os.replace(tmp, p)  # atomic: a reader sees the old file or the new one
        return p


def new_run(bench: str, config: dict):
    """The toolkit's BenchRun when the repo's toolkit imports, else the inline writer."""
    sys.path.insert(0, str(ROOT))
    try:
        from toolkit.results import BenchRun

        return BenchRun(bench, config)
    except Exception:  # noqa: BLE001 - any import failure (module missing, old Python) means: write inline
        return InlineRun(bench, config)


# --- measurement ------------------------------------------------------------------------------------------
def check(args, what: str) -> None:
    """Start nothing new once ``--budget-s`` is spent."""
    if time.monotonic() > args.deadline:
        raise Skip(f"time budget spent before {what}")


def timed(fn, cuda: bool, repeats: int, target_s: float = 0.05) -> list[float]:
    """Seconds per call, one figure per repeat of ``iters`` calls (``iters`` makes a repeat last ~``target_s``:
    one kernel is too short for the event clock). CUDA events on the GPU, perf_counter on the CPU."""
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn(), fn(), sync()
    t = time.perf_counter()
    fn(), sync()
    iters, out = max(1, min(1000, int(target_s / max(time.perf_counter() - t, 1e-6)))), []
    for _ in range(repeats):
        start, end = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) if cuda else (0, 0)
        start.record() if cuda else None
        t = time.perf_counter()
        for _ in range(iters):
            fn()
        end.record() if cuda else None
        end.synchronize() if cuda else None
        out.append((start.elapsed_time(end) / 1000 if cuda else time.perf_counter() - t) / iters)
    return out


@contextlib.contextmanager
def fp32_matmul(mode: str):  # "high": fp32 matmuls may use TF32 tensor cores; "highest": true fp32
    import torch
    prev = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(prev)


def section_matmul(run, dev: str, args) -> dict:
    import torch

    cuda = dev == "cuda"
    cc, skipped, failed = torch.cuda.get_device_capability() if cuda else None, {}, {}
    dtypes = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    for fmt in ("fp32", "tf32", "bf16", "fp16", "fp8"):
        if fmt == "tf32" and not cuda:
            skipped[fmt] = "TF32 is a CUDA tensor-core mode"
            continue
        if fmt == "fp8" and (not hasattr(torch, "_scaled_mm") or (cuda and cc < (8, 9))):
            skipped[fmt] = f"FP8 matmul needs torch._scaled_mm and CUDA compute capability >= 8.9 (have {cc})"
            continue
        try:  # one format failing must not lose the others
            for i, n in enumerate(args.sizes):
                check(args, f"matmul {fmt} n={n}")
                a32, b32 = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
                if fmt == "fp8":  # randn fits e4m3 (max 448) with scale 1; _scaled_mm wants B column-major
                    a, b = a32.to(torch.float8_e4m3fn), b32.t().contiguous().to(torch.float8_e4m3fn).t()
                    one = torch.ones((), device=dev)
                    fn = functools.partial(torch._scaled_mm, a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                else:
                    a, b = a32.to(dtypes[fmt]), b32.to(dtypes[fmt])
                    fn = functools.partial(torch.matmul, a, b)
                with fp32_matmul("high" if fmt == "tf32" else "highest"):
                    secs = timed(fn, cuda, args.repeats)
                    c = fn() if i == 0 else None
                lab = {"format": fmt, "n": n}
                run.add("matmul_tflops", "TFLOP/s", repeats=[2 * n**3 / s / 1e12 for s in secs], labels=lab,
                        definition="2 n^3 / seconds per product")
                if c is not None:
                    ref = a32.double() @ b32.double()
                    run.add("matmul_rel_error", "ratio", value=((c.double() - ref).norm() / ref.norm()).item(),
                            labels=lab, definition="||C - C_fp64||_F / ||C_fp64||_F, same fp32 operands")
                del a32, b32, a, b, fn, c
        except Skip:
            raise
        except Exception as exc:  # noqa: BLE001
            failed[fmt] = f"{type(exc).__name__}: {exc}"[:500]
        if cuda:
            torch.cuda.empty_cache()
    if failed:
        raise RuntimeError(f"matmul formats failed (the others are recorded): {failed}")
    return {"skipped": skipped}


def section_sdpa(run, dev: str, args) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cuda, b, h, d = dev == "cuda", args.sdpa_batch, 16, 128
    for s in args.seq_lens:
        check(args, f"sdpa seq {s}")
        q, k, v = (torch.randn(b, h, s, d, device=dev, dtype=torch.bfloat16) for _ in range(3))
        ms, out = {}, {}
        for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("math", SDPBackend.MATH)):
            fn = functools.partial(F.scaled_dot_product_attention, q, k, v, is_causal=True)
            with sdpa_kernel(backend):  # only this backend may run: an unsupported case raises, never falls back
                secs = timed(fn, cuda, args.repeats)
                out[name], ms[name] = fn(), sum(secs) / len(secs)
            lab = {"backend": name, "seq_len": s, "batch": b, "heads": h, "head_dim": d, "dtype": "bf16"}
            run.add("sdpa_ms", "ms", repeats=[x * 1000 for x in secs], labels=lab, definition="causal, per call")
            run.add("sdpa_tflops", "TFLOP/s", repeats=[2 * b * h * s * s * d / x / 1e12 for x in secs], labels=lab,
                    definition="4 b h s^2 d flops (QK^T, PV) halved by the causal mask, per second")
        lab = {"seq_len": s, "batch": b, "heads": h, "head_dim": d}
        run.add("sdpa_speedup", "ratio", value=ms["math"] / ms["flash"], labels=lab, definition="math ms / flash ms")
        run.add("sdpa_max_abs_diff", "abs", value=(out["flash"].float() - out["math"].float()).abs().max().item(),
                labels=lab)
    return {}


def section_knn(run, dev: str, args) -> dict:
    import torch
    import torch.nn.functional as F

    n, dim, k = args.vectors, 384, 10
    g = torch.Generator(device=dev).manual_seed(0)
    x = F.normalize(torch.randn(n, dim, device=dev, generator=g), dim=1)
    for bs in (1, 64):
        check(args, f"search batch {bs}")
        idx = torch.randint(0, n, (bs,), device=dev, generator=g)
        q = F.normalize(x[idx] + 0.01 * torch.randn(bs, dim, device=dev, generator=g), dim=1)

        def search(q=q):
            return torch.topk(q @ x.T, k, dim=1)
        with fp32_matmul("highest"):  # TF32 off: fp32 scores, the exact ranking
            secs = timed(search, dev == "cuda", args.repeats)
            found = search().indices[:, 0]
        lab = {"batch_size": bs, "vectors": n, "dim": dim, "k": k, "dtype": "fp32"}
        run.add("offline_search_qps", "queries/s", repeats=[bs / s for s in secs], labels=lab,
                definition="brute-force inner product + topk (exact)")
        run.add("offline_search_ms", "ms", repeats=[s * 1000 for s in secs], labels=lab, definition="per batch")
        run.add("planted_recall_at_1", "share", value=(found == idx).float().mean().item(), labels=lab,
                definition="share of queries whose top hit is the stored vector they were made from")
    return {}


def section_gptq(run, dev: str, args) -> dict:
    import tempfile

    try:
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
    except ImportError as exc:
        raise Skip(f"llmcompressor not importable ({exc}); install it where a package registry is reachable") from None
    import torch
    from datasets import Dataset
    from tokenizers import Tokenizer, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    cuda, (hidden, layers, samples, seq) = dev == "cuda", args.gptq_dims
    cfg = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
                      num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=seq)
    # oneshot wants a processor and an on-disk config (name_or_path) even for token ids: a word-level stand-in
    vocab = Tokenizer(models.WordLevel({f"t{i}": i for i in range(4096)}, unk_token="t0"))
    tok = PreTrainedTokenizerFast(tokenizer_object=vocab, unk_token="t0", pad_token="t1")
    ids = torch.randint(16, 4096, (samples, seq), generator=torch.Generator().manual_seed(0))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * seq] * samples})
    secs, change, quantized, notes = [], None, 0, {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.save_pretrained(tmp)
        for r in range(min(args.repeats, 3) + 1):  # run 0 is the warm-up (kernel compilation, lazy init)
            check(args, f"gptq run {r}")
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg).to(torch.bfloat16).to(dev)
            model.config.name_or_path, notes["params"] = tmp, sum(p.numel() for p in model.parameters())
            with torch.no_grad():
                before = model(ids[:4].to(dev)).logits.float()
            torch.cuda.synchronize() if cuda else None
            t = time.perf_counter()
            oneshot(model=model, dataset=data, processor=tok, num_calibration_samples=samples, max_seq_length=seq,
                    recipe=[GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"])],
                    shuffle_calibration_samples=False)
            torch.cuda.synchronize() if cuda else None
            secs += [time.perf_counter() - t] if r else []
            quantized = sum(hasattr(m, "weight_scale") for m in model.modules())
            try:  # a side figure: it must not cost the timing above
                with torch.no_grad():
                    after = model.to(dev)(ids[:4].to(dev)).logits.float()
                change = ((after - before).norm() / before.norm()).item()
            except Exception as exc:  # noqa: BLE001
                notes["logits_error"] = f"{type(exc).__name__}: {exc}"[:500]
    lab = {"hidden": hidden, "layers": layers, "samples": samples, "seq_len": seq, "scheme": "W4A16", "group": 128}
    run.add("gptq_calibration_s", "s", repeats=secs, labels=lab, definition="oneshot wall time after a warm-up run")
    run.add("gptq_logits_rel_change", "ratio", value=change, labels=lab,
            definition="||logits_q - logits||_F / ||logits||_F on 4 calibration rows")
    run.add("gptq_quantized_layers", "count", value=quantized, labels=lab)
    return notes


SECTIONS = {"matmul": section_matmul, "sdpa": section_sdpa, "knn": section_knn, "gptq": section_gptq}
SIZES = {  # matmul n, sdpa sequence lengths, sdpa batch, search vectors, GPTQ (hidden, layers, samples, seq_len)
    "full": ([1024, 4096, 8192], [1024, 4096], 4, 1_000_000, (1024, 4, 64, 512)),
    "quick": ([2048, 8192], [2048], 4, 200_000, (512, 2, 32, 256)),
    "cpu-smoke": ([64, 128], [64], 1, 5000, (128, 1, 4, 32)),
}


def _on_alarm(signum, frame):
    raise TimeoutError("hard time limit (--budget-s + 60 s) reached")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python scripts/gpu_check.py", description=__doc__.splitlines()[0])
    p.add_argument("--output", "--report", dest="output", help="default artifacts/reports/gpu-check.json")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--budget-s", type=float, default=480, help="no new measurement starts after this")
    p.add_argument("--quick", action="store_true", help="smaller sizes (about a minute on a recent GPU)")
    p.add_argument("--cpu-smoke", action="store_true", help="tests only: toy sizes on the CPU (needs --output)")
    args = p.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("gpu-check: torch is not importable here: nothing measured, nothing written")
        return 0
    if args.cpu_smoke and not args.output:
        p.error("--cpu-smoke needs --output (it must not replace GPU evidence)")
    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}, CUDA build {torch.version.cuda}): "
              "nothing measured, nothing written")
        return 0
    dev = "cpu" if args.cpu_smoke else "cuda"
    mode = "cpu-smoke" if args.cpu_smoke else "quick" if args.quick else "full"
    args.sizes, args.seq_lens, args.sdpa_batch, args.vectors, args.gptq_dims = SIZES[mode]
    args.repeats = min(args.repeats, 2) if args.cpu_smoke else args.repeats
    run, gpu = new_run("gpu-check", {k: v for k, v in vars(args).items() if k != "output"} | {"device": dev}), {}
    if dev == "cuda":
        pr = torch.cuda.get_device_properties(0)
        gpu = {"name": pr.name, "compute_capability": f"{pr.major}.{pr.minor}", "sm_count": pr.multi_processor_count,
               "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    args.deadline, sections = time.monotonic() + args.budget_s, {}
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(int(args.budget_s) + 60)
    try:
        for name, fn in SECTIONS.items():
            t = time.monotonic()
            try:
                check(args, name)
                sections[name] = {"status": "ok", **fn(run, dev, args)}
            except Skip as exc:
                sections[name] = {"status": "skipped", "reason": str(exc)}
            except Exception as exc:  # noqa: BLE001 - record it; the other sections still run
                sections[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000]}
                torch.cuda.empty_cache() if dev == "cuda" else None
            sections[name]["wall_s"] = round(time.monotonic() - t, 1)
            print(f"[gpu-check] {name}: {sections[name]['status']} ({sections[name]['wall_s']} s)", flush=True)
    finally:
        signal.alarm(0)
    path = run.write(Path(args.output or ROOT / "artifacts" / "reports" / "gpu-check.json"),
                     extra={"gpu": gpu, "sections": sections, "writer": type(run).__name__})
    for m in json.loads(path.read_text())["metrics"]:
        cv = (m["interval"] or {}).get("cv")
        value = "—" if m["value"] is None else f"{m['value']:.4g}"
        labels = " ".join(f"{k}={v}" for k, v in m["labels"].items())
        print(f"  {m['name']:<24} {labels:<58} {value} {m['unit']}" + ("" if cv is None else f"  CV {cv:.1%}"))
    for name, s in sections.items():
        if s["status"] != "ok":
            print(f"  {name}: {s['status']}: {s.get('reason') or s.get('error')}")
    print(f"results: {path}")
    return 1 if any(s["status"] == "error" for s in sections.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
