"""``make bench-engines``: the same eval suite through the RAG endpoint with vLLM and with llama.cpp, one compare.

No measurement loop of its own: each variant is one ``toolkit eval`` run (same suite, index, SLO, repeats and
report schema), then ``toolkit compare`` renders them side by side (compare.md/compare.html, Pareto front).

Variants, each report named after it (the compare label):
  ``vllm-<dir>``: every ``--vllm-model`` (default: ``--model``) with the vLLM profile (``--vllm-profile``);
  ``llamacpp-<type>``: GGUF exports of ``--model`` (``--types``, default f16, q8_0, q4_k_m), made once with
  ``toolkit export-gguf`` and reused while their manifest's source hash matches, and the SmolLM2 Q4_1 GGUF as
  shipped (``--no-shipped`` leaves it out; the reference model *is* its dequantization, so every variant has
  the same weights up to the format's rounding).
llama.cpp runs with ``serve/llamacpp.yaml`` plus the tuning flags here (threads, threads-batch, slots, batch
sizes), vLLM with ``--vllm-profile`` plus its own (dtype, max_num_seqs). Each flag takes a comma list; several
values make a sweep, every combination a variant named by what varies (``llamacpp-q8_0-t1-p8``,
``vllm-model-float32``), so both engines are tuned with the same mechanism and every setting tried is in the
compare. Profiles are written to ``<output>/<kind>-profile<suffix>.yaml`` and recorded with the reports.
``--vllm-compiled`` runs every variant on a copy of the suite without its vLLM ``extra_args`` (smoke's ``enforce_eager``), so vLLM is
measured compiled, as it serves in production. Perplexity is measured by transformers on
every variant, a GGUF directory's dequantized by transformers (``gguf_file=``, toolkit.modeling).

``python -m toolkit.engine.bench_engines [--model DIR] [--index DIR] [--suite S] [--output DIR] ...``
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from toolkit.errors import ToolkitError
from toolkit.paths import ARTIFACTS, REFERENCE_MODEL, REPO_ROOT, REPORTS_DIR, SERVE_DIR

ENGINES_SUITE = REPO_ROOT / "eval" / "suites" / "engines.yaml"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m toolkit.engine.bench_engines", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REFERENCE_MODEL), help="HF checkpoint exported to GGUF and served by "
                   "vLLM as the baseline (default: %(default)s)")
    p.add_argument("--vllm-model", action="append", default=[], metavar="DIR", help="vLLM variant (repeatable; "
                   "default: --model); e.g. the W8A8 and distilled checkpoints")
    p.add_argument("--vllm-profile", default=str(SERVE_DIR / "cpu.yaml"), help="vLLM profile (default: %(default)s)")
    p.add_argument("--llamacpp-profile", default=str(SERVE_DIR / "llamacpp.yaml"), help="llama.cpp profile the "
                   "tuning flags override (default: %(default)s)")
    p.add_argument("--types", default="f16,q8_0,q4_k_m", help="GGUF exports of --model (default: %(default)s; "
                   "'' for none)")
    p.add_argument("--no-shipped", action="store_true", help="leave out the shipped SmolLM2 Q4_1 GGUF")
    p.add_argument("--index", help="index directory (default: eval's, artifacts/indexes/flat)")
    p.add_argument("--suite", default=str(ENGINES_SUITE), help="eval suite (default: %(default)s)")
    p.add_argument("--repeats", type=int, help="runs per load point (default: the suite's)")
    p.add_argument("--slo", help="latency objectives (default: the suite's)")
    # tuning: each flag takes one value or a comma list; several make a sweep (every combination is a variant)
    p.add_argument("--threads", type=int_list, help="llama.cpp -t, e.g. 1,2 (default: the profile's)")
    p.add_argument("--threads-batch", type=int_list, help="llama.cpp -tb, prompt processing (default: the profile's)")
    p.add_argument("--parallel", type=int_list, help="llama.cpp --parallel slots, e.g. 4,16 (default: the profile's)")
    p.add_argument("--batch-size", type=int_list, help="llama.cpp -b")
    p.add_argument("--ubatch-size", type=int_list, help="llama.cpp -ub")
    p.add_argument("--vllm-dtype", type=str_list, help="vLLM dtype(s), e.g. bfloat16,float32 (default: the "
                   "profile's)")
    p.add_argument("--max-num-seqs", type=int_list, help="vLLM max_num_seqs, e.g. 8,16 (default: the profile's)")
    p.add_argument("--vllm-compiled", action="store_true", help="drop the suite's vLLM extra_args (smoke's "
                   "enforce_eager) so vLLM runs compiled, as in production; every variant gets the same suite")
    p.add_argument("--only", choices=["vllm", "llamacpp"], help="run one engine's variants only")
    p.add_argument("--output", default=str(REPORTS_DIR / "bench-engines"), help="reports + compare (default: "
                   "%(default)s)")
    return p


# name-suffix letter of each tuning knob, e.g. ``llamacpp-q8_0-t1-p8`` (only knobs given several values appear)
LLAMACPP_KNOBS = {"threads": "t", "threads_batch": "tb", "parallel": "p", "batch_size": "b", "ubatch_size": "ub"}
VLLM_KNOBS = {"dtype": "", "max_num_seqs": "s"}


def sweep(values: dict[str, list | None], letters: dict[str, str]) -> list[tuple[str, dict]]:
    """Every combination of the given knob values (the Cartesian product, in flag order), each with the name
    suffix of the knobs that vary: ``{"threads": [1, 2], "parallel": [4]}`` -> ``("-t1", {...}), ("-t2", {...})``."""
    given = {k: v for k, v in values.items() if v}
    varying = [k for k, v in given.items() if len(v) > 1]
    combos = [dict(zip(given, c)) for c in itertools.product(*given.values())]
    return [("".join(f"-{letters[k]}{c[k]}" for k in varying), c) for c in combos]


def tuned_profiles(base: str, kind: str, values: dict[str, list | None], out: Path) -> list[tuple[str, Path]]:
    """``base`` (a ``kind`` profile) with each :func:`sweep` combination applied (llama.cpp: ``engine.llamacpp``,
    vLLM: ``engine``), validated like a profile file, written to ``out``: ``[(name suffix, profile path)]``."""
    from pydantic import ValidationError

    from toolkit.config import dump_recipe
    from toolkit.manifest import atomic_write_text
    from toolkit.serving.profiles import ServeProfile, load_profile

    prof = load_profile(base)
    if prof.engine.kind != kind:
        raise ToolkitError(f"--{kind}-profile {base}: engine.kind is {prof.engine.kind}, not {kind}")
    paths = []
    for suffix, setting in sweep(values, LLAMACPP_KNOBS if kind == "llamacpp" else VLLM_KNOBS):
        data = dump_recipe(prof)
        (data["engine"]["llamacpp"] if kind == "llamacpp" else data["engine"]).update(setting)
        try:  # validated like the profile: --threads 0 is an error here, not in llama-server
            tuned = ServeProfile.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            flag = {"dtype": "vllm-dtype"}.get(str(first["loc"][-1]), str(first["loc"][-1])).replace("_", "-")
            raise ToolkitError(f"--{flag}: {first['msg']}") from None
        path = out / f"{kind}-profile{suffix}.yaml"
        atomic_write_text(path, yaml.safe_dump(dump_recipe(tuned), sort_keys=False))
        paths.append((suffix, path))
    return paths


def int_list(text: str) -> list[int]:
    """``"1,2"`` -> ``[1, 2]`` (a tuning flag's values; several make a sweep)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated integers, e.g. 1,2") from None


def str_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def bench_suite(args: argparse.Namespace, out: Path) -> str:
    """The suite every variant runs: ``--suite`` itself, or with ``--vllm-compiled`` a copy without its vLLM
    ``extra_args`` (llama.cpp never gets them: the eval applies them to vLLM profiles only)."""
    from toolkit.config import dump_recipe
    from toolkit.evaluation.suite import load_suite
    from toolkit.manifest import atomic_write_text

    if not args.vllm_compiled:
        return args.suite
    suite = load_suite(args.suite)
    suite.engine.extra_args = {}
    path = out / "suite.yaml"
    atomic_write_text(path, yaml.safe_dump(dump_recipe(suite), sort_keys=False))
    return str(path)


def gguf_variants(model: Path, types: list[str], shipped: bool) -> dict[str, Path]:
    """``{report name: GGUF model directory}``, exporting what is missing or stale."""
    from toolkit.engine.gguf_export import TYPES, export_checkpoint, package_gguf
    from toolkit.manifest import read_manifest, sha256_tree

    out: dict[str, Path] = {}
    unknown = [t for t in types if t not in TYPES]
    if unknown:
        raise ToolkitError(f"--types: {', '.join(unknown)} not one of {', '.join(TYPES)}")
    digest = sha256_tree(model) if types else None
    for t in types:
        d = ARTIFACTS / "gguf" / f"{model.name}-{t}"
        m = read_manifest(d) if d.is_dir() else None
        if not m or m.get("inputs", {}).get("model", {}).get("sha256") != digest:
            print(f"bench-engines: exporting {model} to {t} -> {d}", flush=True)
            export_checkpoint(model, t, d)
        out[f"llamacpp-{t}"] = d
    if shipped:
        from toolkit.reference.pretrained import locate_gguf

        recipe = yaml.safe_load((REPO_ROOT / "recipes" / "reference" / "default.yaml").read_text())["pretrained"]
        src = locate_gguf(recipe["package"], recipe["version"], recipe["file"])
        d = ARTIFACTS / "gguf" / f"{src.stem}-as-is"
        if not (d / "model.gguf").is_file():
            package_gguf(src, d)
        out["llamacpp-shipped-q4_1"] = d
    return out


def run_eval(name: str, model: Path, profile: str | Path, args: argparse.Namespace, out: Path) -> Path:
    report = out / f"{name}.json"
    cmd = [sys.executable, "-m", "toolkit", "eval", "--model", str(model), "--profile", str(profile),
           "--suite", args.suite, "--output", str(report)]
    for flag, value in (("--index", args.index), ("--repeats", args.repeats), ("--slo", args.slo)):
        if value is not None:
            cmd += [flag, str(value)]
    print(f"bench-engines: {name}: {' '.join(cmd[2:])}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO_ROOT)
    if proc.returncode != 0:
        raise ToolkitError(f"{name}: toolkit eval failed (exit {proc.returncode}); see its output above")
    print(f"bench-engines: {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return report


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    print(f"bench-engines: CPU flags {cpu_flags()}; load average {os.getloadavg()}", flush=True)
    args.suite = bench_suite(args, out)
    variants: list[tuple[str, Path, str | Path]] = []
    if args.only != "llamacpp":
        knobs = {"dtype": args.vllm_dtype, "max_num_seqs": args.max_num_seqs}
        for suffix, profile in tuned_profiles(args.vllm_profile, "vllm", knobs, out):
            for m in args.vllm_model or [str(model)]:
                variants.append((f"vllm-{Path(m).name}{suffix}", Path(m), profile))
    if args.only != "vllm":
        from toolkit.engine.launch import llamacpp_command

        llamacpp_command("llama-server")  # not built: one line, before any export or eval
        knobs = {k: getattr(args, k) for k in LLAMACPP_KNOBS}
        profiles = tuned_profiles(args.llamacpp_profile, "llamacpp", knobs, out)
        types = [t.strip() for t in args.types.split(",") if t.strip()]
        for name, d in gguf_variants(model, types, not args.no_shipped).items():
            variants += [(f"{name}{suffix}", d, profile) for suffix, profile in profiles]
    reports = [run_eval(name, m, prof, args, out) for name, m, prof in variants]
    cmd = [sys.executable, "-m", "toolkit", "compare", *map(str, reports), "--output", str(out / "compare")]
    proc = subprocess.run(cmd, cwd=REPO_ROOT)
    write_recommendation(reports, out / "recommendation.md")
    print(f"bench-engines: CPU flags {cpu_flags()}; load average {os.getloadavg()}", flush=True)
    return proc.returncode


def write_recommendation(reports: list[Path], path: Path) -> None:
    """Print and save which variant to deploy at each concurrency (:func:`toolkit.engine.recommend.recommend`)."""
    from toolkit.engine.recommend import recommend
    from toolkit.evaluation.report import read_report
    from toolkit.manifest import atomic_write_text

    lines = [f"# Recommendation ({cpu_flags()}; load average {os.getloadavg()[0]:.1f})", "",
             *recommend({p.stem: read_report(p) for p in reports})]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)


def cpu_flags() -> str:
    """The ISA extensions this CPU has (toolkit.hardware's reader: ``isa`` maps each known flag to present)."""
    from toolkit.hardware import hardware_report, isa_summary

    return isa_summary(hardware_report()) or "none of the known ISA flags"


def main(argv: list[str] | None = None) -> int:
    from toolkit.cli import run_guarded

    return run_guarded(run, build_parser().parse_args(argv))  # SIGTERM unwinds, so the engine is stopped


if __name__ == "__main__":
    raise SystemExit(main())
