"""The paraphrase set's construction, the rate arithmetic on probes whose outcome is set by hand, and one
small real run of ``python -m toolkit.evaluation.paraphrases`` (real embedder, results file in the schema)."""

import json
from itertools import pairwise

from toolkit.evaluation.paraphrases import (
    OTHER,
    RULES,
    Probe,
    build_set,
    choose,
    main,
    parse,
    rates,
)


def _qa(*names_kinds):
    q = {"function": "What does the function {} do?", "method": "What does the method {} do?",
         "class": "What is the class {}?", "module": "What is the {} module for?",
         "attribute": "What is the attribute {}?"}
    return [{"question": q[k].format(n), "doc_id": n} for n, k in names_kinds]


def test_parse_each_template():
    assert parse("What does the function json.dumps do?") == ("function", "json.dumps")
    assert parse("What does the method dict.get do?") == ("method", "dict.get")
    assert parse("What is the class abc.ABC?") == ("class", "abc.ABC")
    assert parse("What is the json module for?") == ("module", "json")
    assert parse("What is the attribute array.array.typecode?") == ("attribute", "array.array.typecode")
    assert parse("Why is the sky blue?") is None


def test_siblings_alternate_between_cache_and_neighbours():
    qa = _qa(("json.loads", "function"), ("json.dump", "function"), ("json.load", "function"),
             ("json.dumps", "function"), ("os.getcwd", "function"), ("json", "module")) + \
        [{"question": "Why is the sky blue?", "doc_id": "sky"}]
    cached, probes = build_set(qa)
    # sorted within (kind, parent): dump, dumps, load, loads -> dump and load cached, dumps and loads neighbours
    assert [c["doc_id"] for c in cached] == ["json.dump", "json.load", "os.getcwd", "json"]
    pos = [p for p in probes if p.positive]
    neg = [p for p in probes if not p.positive and not p.other]
    other = [p for p in probes if p.other]
    assert len(pos) == 4 * len(RULES["function"])
    assert len(other) == 3 * len(OTHER["function"]) + len(OTHER["module"]) and {p.source for p in other} == {
        "json.dump", "json.load", "os.getcwd", "json"}
    assert {p.source for p in neg} == {"json.dumps", "json.loads"} and len(neg) == 2 * (1 + len(RULES["function"]))
    assert Probe("What does the function json.dumps do?", "json.dumps", False, -1, "function") in neg
    assert all("json.dump" in p.text for p in pos if p.source == "json.dump")
    assert len(build_set(qa, limit=1)[0]) == 1


def test_rates_and_choice_on_hand_set_outcomes():
    probes = [Probe("a", "A", True, 0, "function"), Probe("b", "B", True, 0, "function"),
              Probe("n", "N", False, -1, "function"), Probe("m", "M", False, 0, "function"),
              Probe("o", "A", False, 0, "function", other=True)]
    # a: its own entry at 0.95; b: another entry at 0.90; n: an entry at 0.85; m: nothing similar;
    # o (another question about A): A's entry at 0.93
    matches = [(0.95, "A"), (0.90, "A"), (0.85, "A"), (-1.0, None), (0.93, "A")]
    r = rates(probes, matches, 0.80)
    assert (r["hits"], r["wrong"], r["false"], r["other"]) == (1, 1, 1, 1)
    assert r["hit_rate"] == 0.5 and r["false_hit_rate"] == 0.5 and r["other_question_rate"] == 1.0
    r = rates(probes, matches, 0.92)
    assert (r["hits"], r["wrong"], r["false"], r["other"]) == (1, 0, 0, 1)
    table = [rates(probes, matches, t) for t in (0.80, 0.88, 0.92, 0.94, 0.96)]
    assert choose(table)["threshold"] == 0.92  # lowest with no wrong entry and no false hit
    assert choose(table, answers=True)["threshold"] == 0.94  # answer reuse: the other question must miss too
    assert choose(table[:2]) is None


def test_cli_errors_exit_2(tmp_path, capsys):
    assert main(["--qa", str(tmp_path / "none.jsonl")]) == 2
    assert "--qa" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "What is the json module for?"}\n')
    assert main(["--qa", str(bad)]) == 2 and "line 1 lacks" in capsys.readouterr().err
    assert main(["--qa", str(bad), "--limit", "0"]) == 2 and "--limit" in capsys.readouterr().err


def test_small_real_run_writes_the_results_file(tmp_path):
    qa = tmp_path / "qa.jsonl"
    rows = _qa(("json.dump", "function"), ("json.dumps", "function"), ("json.load", "function"),
               ("json.loads", "function"), ("abc.ABC", "class"), ("abc.ABCMeta", "class"))
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sc.json"
    assert main(["--qa", str(qa), "--out", str(out), "--threads", "1"]) == 0
    data = json.loads(out.read_text())
    assert data["bench"] == "semantic-cache" and data["config"]["cached"] == 3
    assert data["environment"]["load_avg_start"] and data["environment"]["hardware"]
    names = {m["name"] for m in data["metrics"]}
    assert {"semantic_cache_hit_rate", "semantic_cache_false_hit_rate", "semantic_cache_wrong_entry_rate",
            "semantic_cache_other_question_rate"} <= names
    assert {m["labels"]["guard"] for m in data["metrics"] if m["name"] == "semantic_cache_hit_rate"} == {
        "none", "identifiers"}
    rows = data["none"]["table"]
    assert len(rows) == 50 and all(0 <= r["hit_rate"] <= 1 and 0 <= r["false_hit_rate"] <= 1 for r in rows)
    # raising the threshold can only turn hits into misses
    assert all(a["hits"] + a["wrong"] >= b["hits"] + b["wrong"] and a["false"] >= b["false"]
               and a["other"] >= b["other"] for a, b in pairwise(rows))
    # the guard only removes candidates: never a false hit the cosine alone would not make
    assert all(g["false"] <= n["false"] for g, n in zip(data["identifiers"]["table"], rows))
