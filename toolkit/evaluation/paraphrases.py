"""Paraphrase set from the QA set, and the semantic cache's hit / false-hit rates per similarity threshold.

``python -m toolkit.evaluation.paraphrases [--qa FILE] [--out FILE] [--limit N]``

How the set is made (deterministic rewriting rules; there is no LLM here to paraphrase with):

- Every QA question follows one of five templates ("What does the function X do?", "... method X ...",
  "What is the class X?", "What is the X module for?", "What is the attribute X?"). :data:`RULES` gives each
  template five rewordings that keep the subject X and the question's intent (word order, a synonym for the
  verb, ``X()``, dropped article or question mark, lower case). A question matching no template is skipped.
- Questions are grouped by (template, parent of X): ``json.dump`` and ``json.dumps`` share the group
  (function, ``json``); modules form one group. Within a sorted group, even positions go into the cache and
  odd ones are *neighbours*: the same template about the adjacent sibling API, the hardest case a semantic
  cache must not serve (a different function whose question differs in one token).
- Probes: the five paraphrases of every cached question (should hit, and hit *its* entry), and every
  neighbour's own question plus its five paraphrases (must not hit: their answer is not in the cache).
  Third, :data:`OTHER`: three other questions about each cached API ("What arguments does X take?"); a hit
  serves them X's context (fine for retrieval reuse) but X's *answer* (wrong with ``reuse_answers``).

Measurement: the real embedder (all-MiniLM-L6-v2) encodes cached questions and probes; each probe is looked up
in a :class:`~toolkit.serving.semantic_cache.SemanticCache` holding every cached question (threshold near 0,
so the lookup returns the most similar entry and its cosine). At threshold t:

- hit rate = paraphrase probes whose most similar entry is their own question, with cosine >= t;
- wrong-entry rate = paraphrase probes served another question's entry (cosine >= t);
- false-hit rate = neighbour probes served any entry (cosine >= t);
- other-question rate = other questions about a cached API served any entry (cosine >= t).

Both guards of :class:`~toolkit.serving.semantic_cache.SemanticCache` are measured: the cosine alone
(``none``) and with ``match_identifiers`` (``identifiers``). The recommended threshold is the lowest grid
value with false-hit and wrong-entry rates both <= 1% (the highest hit rate under that bound), and for answer
reuse the other-question rate too; the false-hit rate gets a 95% percentile-bootstrap interval.

Limits: rule paraphrases are much closer to their source than what people type (same name X, same
vocabulary), so the hit rate is an upper bound for real traffic. The identifier guard is flattered most:
paraphrases keep X verbatim and neighbours differ exactly in X, so on this set it rejects every neighbour
that names an identifier by construction; real users who write ``dumps`` for ``json.dumps`` miss it; misspelt names, questions that name X by
its short name only, or ask a *related* question (its arguments, its errors) are not in the set. Neighbours
only cover sibling APIs under the same template; questions about unrelated topics are easier to reject.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

TEMPLATES: dict[str, re.Pattern[str]] = {
    "function": re.compile(r"^What does the function (\S+) do\?$"),
    "method": re.compile(r"^What does the method (\S+) do\?$"),
    "class": re.compile(r"^What is the class (\S+)\?$"),
    "module": re.compile(r"^What is the (\S+) module for\?$"),
    "attribute": re.compile(r"^What is the attribute (\S+)\?$"),
}

_CALLABLE = ["What is the purpose of the {kind} {name}?", "Explain what {name}() does.", "what does {name} do",
             "Can you describe the {name} {kind}?", "Tell me what {name} is for."]
RULES: dict[str, list[str]] = {
    "function": _CALLABLE,
    "method": _CALLABLE,
    "class": ["What is {name}?", "Describe the class {name}.", "What is the {name} class used for?",
              "explain class {name}", "Can you tell me about the {name} class?"],
    "module": ["What is {name} used for?", "What does the {name} module do?", "Describe the {name} module.",
               "why would I use the {name} module", "Tell me about the purpose of module {name}."],
    "attribute": ["What does the attribute {name} hold?", "What is {name}?", "Explain the {name} attribute.",
                  "what is stored in {name}", "Can you describe attribute {name}?"],
}
THRESHOLDS = [round(0.50 + 0.01 * i, 2) for i in range(50)]  # 0.50 .. 0.99
MAX_FALSE = 0.01
GUARDS = ("none", "identifiers")  # cosine alone; cosine + same code identifiers (SemanticCache.match_identifiers)
DEFINITIONS = {"hit": "paraphrases of a cached question served that question's entry (cosine >= threshold)",
               "wrong": "paraphrases of a cached question served another question's entry (cosine >= threshold)",
               "false": "questions about a neighbouring API (not cached) served any entry (cosine >= threshold)",
               "other": "other questions about a cached question's API (arguments, return value, ...) served any "
                        "entry (cosine >= threshold)"}
# Other questions about the same API: a cache hit would serve them the right context but the wrong answer.
OTHER: dict[str, list[str]] = {
    "function": ["What arguments does {name} take?", "What does {name} return?", "What exceptions can {name} raise?"],
    "class": ["How do I create an instance of {name}?", "What methods does {name} have?",
              "Can I subclass {name}?"],
    "module": ["How do I import the {name} module?", "What functions does the {name} module provide?",
               "Is the {name} module deprecated?"],
    "attribute": ["What type is {name}?", "Can I change {name}?", "When is {name} set?"],
}
OTHER["method"] = OTHER["function"]


@dataclass(frozen=True)
class Probe:
    text: str
    source: str  # doc_id of the question it rewords (or is)
    positive: bool  # True: a paraphrase of a cached question; False: must not hit
    rule: int  # index into RULES[kind] (OTHER[kind] for "other"); -1 for a neighbour's own question
    kind: str
    other: bool = False  # another question about the *same* API as a cached one (see OTHER)


def parse(question: str) -> tuple[str, str] | None:
    """``(kind, name)`` of a templated question, else None."""
    for kind, pattern in TEMPLATES.items():
        if m := pattern.match(question):
            return kind, m.group(1)
    return None


def paraphrase(kind: str, name: str) -> list[str]:
    return [rule.format(kind=kind, name=name) for rule in RULES[kind]]


def build_set(qa: list[dict[str, Any]], limit: int | None = None) -> tuple[list[dict[str, Any]], list[Probe]]:
    """``(cached questions, probes)``; ``limit`` caps the number of cached questions (first groups in order)."""
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for item in qa:
        parsed = parse(item["question"])
        if parsed is None:
            continue
        kind, name = parsed
        parent = "" if kind == "module" else name.rsplit(".", 1)[0]
        groups.setdefault((kind, parent), []).append((name, item))
    cached: list[dict[str, Any]] = []
    probes: list[Probe] = []
    for (kind, _), members in sorted(groups.items()):
        if limit is not None and len(cached) >= limit:
            break
        members.sort(key=lambda m: m[0])
        for i, (name, item) in enumerate(members):
            if i % 2 == 0:
                if limit is not None and len(cached) >= limit:
                    break
                cached.append(item)
                probes += [Probe(p, item["doc_id"], True, r, kind) for r, p in enumerate(paraphrase(kind, name))]
                probes += [Probe(q.format(kind=kind, name=name), item["doc_id"], False, r, kind, other=True)
                           for r, q in enumerate(OTHER[kind])]
            else:  # a neighbour of the cached sibling before it
                probes.append(Probe(item["question"], item["doc_id"], False, -1, kind))
                probes += [Probe(p, item["doc_id"], False, r, kind) for r, p in enumerate(paraphrase(kind, name))]
    return cached, probes


def best_matches(cached: list[dict[str, Any]], probes: list[Probe], cached_vecs: Any, probe_vecs: Any,
                 match_identifiers: bool = False) -> list[tuple[float, str | None]]:
    """Per probe, ``(cosine, doc_id)`` of the most similar cached question the cache would serve ((-1, None)
    when none has cosine > 0 or, with the identifier guard, none names the same identifiers)."""
    from toolkit.serving.semantic_cache import SemanticCache

    # threshold ~0: every lookup returns its best entry; thresholds are applied to the cosine afterwards
    cache = SemanticCache(size=len(cached), threshold=1e-6, match_identifiers=match_identifiers)
    for item, vec in zip(cached, cached_vecs):
        cache.put("qa", item["question"], vec, [item["doc_id"]], top_k=1)
    out = []
    for probe, vec in zip(probes, probe_vecs):
        m = cache.lookup("qa", vec, query=probe.text)
        out.append((-1.0, None) if m is None else (m.similarity, m.entry.hits[0]))
    return out


def rates(probes: list[Probe], matches: list[tuple[float, str | None]], t: float) -> dict[str, Any]:
    pos = [(p, m) for p, m in zip(probes, matches) if p.positive]
    neg = [m for p, m in zip(probes, matches) if not p.positive and not p.other]
    others = [m for p, m in zip(probes, matches) if p.other]
    other = sum(1 for s, _ in others if s >= t)
    hit = sum(1 for p, (s, d) in pos if s >= t and d == p.source)
    wrong = sum(1 for p, (s, d) in pos if s >= t and d != p.source)
    false = sum(1 for s, _ in neg if s >= t)
    return {"threshold": t, "hits": hit, "wrong": wrong, "false": false, "positives": len(pos),
            "negatives": len(neg), "hit_rate": hit / max(len(pos), 1), "wrong_entry_rate": wrong / max(len(pos), 1),
            "false_hit_rate": false / max(len(neg), 1), "other": other, "others": len(others),
            "other_question_rate": other / max(len(others), 1)}


def choose(table: list[dict[str, Any]], max_false: float = MAX_FALSE, answers: bool = False
           ) -> dict[str, Any] | None:
    """The lowest threshold whose false-hit and wrong-entry rates are both <= ``max_false``; for answer reuse
    (``answers``) the other-question rate too: serving X's context to another question about X is fine,
    serving X's answer is not."""
    ok = [r for r in table if r["false_hit_rate"] <= max_false and r["wrong_entry_rate"] <= max_false
          and (not answers or r["other_question_rate"] <= max_false)]
    return min(ok, key=lambda r: r["threshold"]) if ok else None


def load_qa(path: Path) -> list[dict[str, Any]]:
    from toolkit.jsonl import read_jsonl

    if not path.is_file():
        raise ToolkitError(f"--qa {path}: no such file (build the reference set first: make reference)")
    rows = list(read_jsonl(path))
    bad = next((i for i, r in enumerate(rows) if not {"question", "doc_id"} <= set(r)), None)
    if bad is not None:
        raise ToolkitError(f"{path}: line {bad + 1} lacks 'question' or 'doc_id'")
    return rows


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolkit.results import BenchRun
    from toolkit.retrieval.config import default_embedding_model
    from toolkit.retrieval.embedding import Embedder

    console = Console()
    cached, probes = build_set(load_qa(Path(args.qa)), args.limit)
    if not cached:
        raise ToolkitError(f"{args.qa}: no question matches a paraphrase template")
    n_pos = sum(p.positive for p in probes)
    bench = BenchRun("semantic-cache", config={"qa": str(args.qa), "limit": args.limit, "cached": len(cached),
                                               "paraphrases": n_pos, "neighbours": len(probes) - n_pos,
                                               "embedding_model": default_embedding_model(), "rules": RULES})
    with console.status(f"embedding {len(cached)} cached questions and {len(probes)} probes"):
        embedder = Embedder(default_embedding_model(), threads=args.threads)
        cached_vecs = embedder.encode([c["question"] for c in cached])
        probe_vecs = embedder.encode([p.text for p in probes])
    extra: dict[str, Any] = {}
    tables = {}
    for guard in GUARDS:
        matches = best_matches(cached, probes, cached_vecs, probe_vecs, match_identifiers=guard == "identifiers")
        table = [rates(probes, matches, t) for t in THRESHOLDS]
        for r in table:
            labels = {"threshold": r["threshold"], "guard": guard}
            for key, name in (("hit", "hit_rate"), ("wrong", "wrong_entry_rate"), ("false", "false_hit_rate"),
                              ("other", "other_question_rate")):
                bench.add(f"semantic_cache_{name}", "share", value=r[name], labels=labels, definition=DEFINITIONS[key])
        tables[guard] = (table, choose(table))
        extra[guard] = {"table": table, "recommended": recommend(probes, matches, table, bench, guard)}
    out = Table(title=f"semantic cache on {len(cached)} cached questions: {n_pos} paraphrases (hit / wrong "
                      f"entry), {len(probes) - n_pos} neighbour questions (false hit)")
    out.caption = "+id: with the identifier guard (match_identifiers); ← recommended threshold"
    out.add_column("cos ≥", justify="right")
    for guard in GUARDS:
        for col in ("hit", "wrong", "false", "other"):
            out.add_column(f"{col}{'' if guard == 'none' else '+id'}", justify="right")
    for i, t in enumerate(THRESHOLDS):
        if t < 0.70:
            continue
        row = [f"{t:.2f}"]
        for guard in GUARDS:
            r, best = tables[guard][0][i], tables[guard][1]
            mark = "←" if best is r else ""
            row += [f"{r['hit_rate']:.1%}{mark}", f"{r['wrong_entry_rate']:.1%}", f"{r['false_hit_rate']:.1%}",
                    f"{r['other_question_rate']:.1%}"]
        out.add_row(*row)
    console.print(out)
    for guard in GUARDS:
        rec = extra[guard]["recommended"]
        if rec is None:
            console.print(f"[{guard}] no threshold in {THRESHOLDS[0]}..{THRESHOLDS[-1]} keeps false hits <= "
                          f"{MAX_FALSE:.0%}")
            continue
        lo, hi = rec["false_hit_ci95"]
        console.print(f"[{guard}] recommended threshold {rec['threshold']:.2f}: hit rate {rec['hit_rate']:.1%}, "
                      f"false hits {rec['false_hit_rate']:.2%} (95% CI {lo:.2%}–{hi:.2%}), wrong entry "
                      f"{rec['wrong_entry_rate']:.2%}; for answer reuse (other-question hits <= {MAX_FALSE:.0%} "
                      f"too): {_threshold(rec['for_answer_reuse'])}")
    path = bench.write(args.out, extra=extra)
    console.print(f"wrote {path}")
    return 0


def recommend(probes: list[Probe], matches: list[tuple[float, str | None]], table: list[dict[str, Any]],
              bench: Any, guard: str) -> dict[str, Any] | None:
    """The chosen threshold with its false-hit bootstrap interval, hit rate per rewording rule, and examples of
    false hits (what a user would have been served)."""
    from toolkit.stats import bootstrap_mean_ci

    if (best := choose(table)) is None:
        return None
    t = best["threshold"]
    _, lo, hi = bootstrap_mean_ci([1.0 if s >= t else 0.0 for p, (s, _) in zip(probes, matches)
                                   if not p.positive and not p.other])
    per_rule = {}
    for kind, rules in RULES.items():
        for r in range(len(rules)):
            sel = [(p, m) for p, m in zip(probes, matches) if p.kind == kind and p.positive and p.rule == r]
            if sel:
                per_rule[f"{kind}/{r}: {rules[r]}"] = rates(*map(list, zip(*sel)), t)["hit_rate"]
    examples = [{"probe": p.text, "source": p.source, "served": d, "cosine": round(s, 4)}
                for p, (s, d) in zip(probes, matches) if s >= t and d != p.source][:20]
    answers = choose(table, answers=True)
    bench.add("semantic_cache_recommended_threshold", "cosine", value=t, labels={"guard": guard},
              definition=f"lowest threshold with false-hit and wrong-entry rates <= {MAX_FALSE:.0%}")
    return {**best, "false_hit_ci95": [lo, hi], "hit_rate_per_rule": per_rule, "false_hits": examples,
            "for_answer_reuse": answers}


def _threshold(row: dict[str, Any] | None) -> str:
    return "none in the grid" if row is None else f"{row['threshold']:.2f} (hit rate {row['hit_rate']:.1%})"


def build_parser() -> argparse.ArgumentParser:
    from toolkit.paths import REFERENCE_QA, REPORTS_DIR

    ap = argparse.ArgumentParser(prog="python -m toolkit.evaluation.paraphrases", description=__doc__.split("\n")[0])
    ap.add_argument("--qa", default=str(REFERENCE_QA), help="QA set (jsonl with question, doc_id)")
    ap.add_argument("--out", default=str(REPORTS_DIR / "semantic-cache.json"))
    ap.add_argument("--limit", type=int, default=None, help="cache at most N questions (default: all)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the embedder (default: all)")
    return ap


def main(argv: list[str] | None = None) -> int:
    from toolkit.cli import run_guarded

    def checked(args):
        if args.limit is not None and args.limit < 1:
            raise ToolkitError(f"--limit: must be >= 1, got {args.limit}")
        return run(args)
    return run_guarded(checked, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
