"""toolkit.results: the one results schema. Offline (batch_size) and online (concurrency) figures are kept
apart, repeats become a t-based interval and samples percentiles (hand-computed values), the written file
carries the hardware report and both load averages, and a bad file is named in a one-line error."""

import json

import pytest

from toolkit.errors import ToolkitError
from toolkit.results import SCHEMA, BenchRun, find, read_results


def test_a_metric_is_offline_or_online_never_both():
    run = BenchRun("t")
    with pytest.raises(ValueError, match="offline .batch_size. or online .concurrency., not both"):
        run.add("decode_tok_s", "tok/s", value=1.0, labels={"batch_size": 8, "concurrency": 8})
    with pytest.raises(ValueError, match="online_e2e_ms: the name says online but the labels say batch_size"):
        run.add("online_e2e_ms", "ms", value=1.0, labels={"batch_size": 8})
    with pytest.raises(ValueError, match="the name says offline but the labels say concurrency"):
        run.add("offline_decode_tok_s", "tok/s", value=1.0, labels={"concurrency": 8})
    run.add("tok_s", "tok/s", value=1.0, labels={"batch_size": 8})
    with pytest.raises(ValueError, match="tok_s: already used with labels {'batch_size': 8}"):
        run.add("tok_s", "tok/s", value=2.0, labels={"concurrency": 8})  # same name, the other experiment
    run.add("tok_s", "tok/s", value=3.0, labels={"batch_size": 1})  # same experiment, another batch size: fine
    assert [m.value for m in run.metrics] == [1.0, 3.0]


def test_repeats_give_mean_t_interval_and_cv():
    run = BenchRun("t")
    m = run.add("offline_decode_tok_s", "tok/s", repeats=[10.0, 12.0, 14.0], labels={"batch_size": 1})
    # mean 12, sample sd 2, t(0.975, df=2) = 4.3027: half-width 4.3027 * 2 / sqrt(3) = 4.9683
    assert m.value == 12.0 and m.interval["n"] == 3 and m.interval["values"] == [10.0, 12.0, 14.0]
    assert m.interval["ci_low"] == pytest.approx(12 - 4.9683, abs=1e-3)
    assert m.interval["ci_high"] == pytest.approx(12 + 4.9683, abs=1e-3)
    assert m.interval["cv"] == pytest.approx(2 / 12)
    one = run.add("offline_decode_tok_s", "tok/s", repeats=[5.0], labels={"batch_size": 8})
    assert one.value == 5.0 and one.interval["ci_low"] is None and one.interval["cv"] is None  # n=1: no CI
    kept = run.add("load_ms", "ms", value=11.0, repeats=[10.0, 14.0])  # an explicit value wins over the mean
    assert kept.value == 11.0 and kept.interval["mean"] == 12.0


def test_samples_give_percentiles():
    m = BenchRun("t").add("online_e2e_ms", "ms", samples=[5.0, 1.0, 3.0, 2.0, 4.0], labels={"concurrency": 4})
    # sorted 1..5, position (n-1)q/100: p50 at 2 -> 3; p90 at 3.6 -> 4.6; p99 at 3.96 -> 4.96
    assert m.summary["p50"] == 3.0 and m.summary["mean"] == 3.0 and m.summary["n"] == 5
    assert m.summary["p90"] == pytest.approx(4.6) and m.summary["p99"] == pytest.approx(4.96)
    assert m.value is None and m.interval is None


def test_write_then_read_round_trips_with_environment(tmp_path):
    run = BenchRun("bench-x", config={"model": "m"})
    run.add("perplexity", "ppl", value=21.5, labels={"variant": "source"})
    run.add("online_e2e_ms", "ms", samples=[1.0, 2.0], labels={"concurrency": 1})
    path = run.write(tmp_path / "deep" / "r.json", extra={"variants": {"source": {"dtype": "bf16"}}})
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]  # no temporary sibling left behind
    data = read_results(path)
    assert data["schema"] == SCHEMA and data["bench"] == "bench-x" and data["config"] == {"model": "m"}
    env = data["environment"]
    assert {"avx2", "avx512f", "amx_tile"} <= set(env["hardware"]["cpu"]["isa"])
    assert env["hardware"]["versions"]["python"] and env["started_utc"].endswith("Z") and env["wall_s"] >= 0
    assert len(env["load_avg_start"]) == 3 and len(env["load_avg_end"]) == 3
    assert data["variants"] == {"source": {"dtype": "bf16"}}
    assert [m["name"] for m in find(data, "perplexity", variant="source")] == ["perplexity"]
    assert find(data, "perplexity", variant="other") == [] and len(find(data, "online_e2e_ms")) == 1
    assert set(data["metrics"][0]) == {"name", "unit", "value", "summary", "interval", "labels", "definition"}


def test_extra_cannot_replace_the_schema_fields():
    with pytest.raises(ValueError, match=r"extra keys \['metrics'\]"):
        BenchRun("t").to_json(extra={"metrics": []})


def test_read_results_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ToolkitError, match=f"^{missing}: results file not found$"):
        read_results(missing)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"schema": "toolkit.results/1", ')
    with pytest.raises(ToolkitError, match=f"^{corrupt}: corrupt results file"):
        read_results(corrupt)
    foreign = tmp_path / "eval-report.json"
    foreign.write_text(json.dumps({"schema": "something-else", "metrics": []}))
    with pytest.raises(ToolkitError, match=f"^{foreign}: not a toolkit results file"):
        read_results(foreign)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ToolkitError, match=f"^{listing}: not a toolkit results file"):
        read_results(listing)
