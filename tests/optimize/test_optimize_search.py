"""The search logic of ``toolkit optimize`` (toolkit.optimize.search) on synthetic trial records: each test builds
records whose right answer follows from how they were built (a known true max load per configuration)."""

from __future__ import annotations

import pytest

from toolkit.optimize.search import (
    choose,
    excluded,
    f1_floor,
    next_work,
    outcome,
    pareto_front,
    ppl_pruned,
    promote,
    rung_plan,
)


def rec(value, f1=0.5, status="done", first_failing=None, rss=100.0, size=1000, rung=0, cid="x"):
    return {"status": status, "value": value, "f1": f1, "first_failing": first_failing, "peak_rss_mb": rss,
            "size_bytes": size, "rung": rung, "config_id": cid, "label": cid, "reason": "boom" if status == "failed"
            else None}


def test_ppl_screen_prunes_only_above_the_budget():
    assert ppl_pruned(0.02, 0.03) is None
    assert ppl_pruned(0.03, 0.03) is None  # at the budget is within it
    assert ppl_pruned(None, 0.03) is None  # not measurable: load-tested rather than guessed
    assert ppl_pruned(0.5, None) is None  # no ppl budget
    why = ppl_pruned(0.09, 0.03)
    assert why is not None and "+9.0%" in why and "+3.0%" in why and "not load-tested" in why


def test_rung_plan_grows_requests_by_eta_and_repeats_follow_the_list():
    assert [rung_plan(r, 8, 2, [1, 2]) for r in range(4)] == [(8, 1), (16, 2), (32, 2), (64, 2)]
    assert rung_plan(2, 4, 3, [1, 2, 3]) == (36, 3)


def test_promote_keeps_the_best_half_and_breaks_ties_by_memory_then_size():
    at = {"a": rec(8), "b": rec(6), "c": rec(4), "d": rec(2), "e": rec(6, rss=50.0)}
    keep, dropped = promote(at, eta=2, floor=None)
    assert keep == ["a", "e", "b"]  # ceil(5/2) = 3; e beats b on memory at the same load
    assert set(dropped) == {"c", "d"} and dropped["c"].startswith("rank 4 of 5")
    tie = {"x": rec(4, rss=100.0, size=2000), "y": rec(4, rss=100.0, size=1000)}
    assert promote(tie, eta=2, floor=None)[0] == ["y"]  # same load and memory: the smaller checkpoint


def test_promote_drops_failed_unmet_and_below_the_f1_floor_whatever_their_rank():
    at = {"fail": rec(None, status="failed"), "none": rec(None), "low_f1": rec(16, f1=0.1), "ok": rec(2)}
    keep, dropped = promote(at, eta=2, floor=0.3)
    assert keep == ["ok"]
    assert dropped["fail"].startswith("trial failed: boom")
    assert dropped["none"] == "no load tried met the SLO"
    assert "F1 0.100 below the quality floor 0.300" in dropped["low_f1"]
    assert promote({"none": rec(None)}, eta=2, floor=None) == ([], {"none": "no load tried met the SLO"})


def test_known_dominated_configurations_are_not_promoted():
    # b missed the SLO at 4, which the best (a) met: b's knee lies below a's, and b's F1 is no better
    at = {"a": rec(4, f1=0.5, first_failing=5), "b": rec(3, f1=0.5, first_failing=4), "c": rec(2, f1=0.9,
                                                                                                first_failing=3)}
    keep, dropped = promote(at, eta=2, floor=None)
    assert "dominated" in dropped["b"]
    assert keep == ["a", "c"]  # c missed below a's load too, but its F1 is better: it stays a contender


def test_f1_floor_is_the_baseline_rung0_f1_minus_the_drop():
    trials = {(0, "base"): rec(4, f1=0.6)}
    assert f1_floor(trials, "base", 0.1) == pytest.approx(0.5)
    assert f1_floor(trials, "base", None) is None
    assert f1_floor({}, "base", 0.1) is None
    assert f1_floor({(0, "base"): rec(None, f1=None, status="failed")}, "base", 0.1) is None


def simulate(true_load: dict[str, float], rungs: int, eta: int, pruned=frozenset(), trials=None, stop_after=None):
    """Run the schedule to completion with measurements equal to each configuration's true max load; return
    (trials, the trials run in this call in order)."""
    trials = dict(trials or {})
    ran = []
    ids = list(true_load)
    while True:
        rung, missing = next_work(ids, set(pruned), trials, rungs, eta, None)
        if rung is None:
            return trials, ran
        for c in missing:
            if stop_after is not None and len(ran) == stop_after:
                return trials, ran
            trials[(rung, c)] = rec(true_load[c], rung=rung, cid=c)
            ran.append((rung, c))


def test_successive_halving_measures_n_then_half_then_a_quarter_and_finds_the_best():
    true = {f"c{i}": float(i) for i in range(1, 9)}  # c8 is the best
    trials, ran = simulate(true, rungs=3, eta=2)
    per_rung = [sorted(c for r, c in ran if r == k) for k in range(3)]
    assert [len(x) for x in per_rung] == [8, 4, 2]
    assert per_rung[1] == ["c5", "c6", "c7", "c8"] and per_rung[2] == ["c7", "c8"]
    result = outcome(list(true), {}, trials, 3, 2, None)
    assert choose(result, None) == "c8"
    assert result["c8"]["status"] == "finalist" and result["c8"]["rung"] == 2
    assert result["c1"]["status"] == "stopped" and result["c1"]["reason"].startswith("rung 0: rank 8 of 8")
    assert result["c6"]["reason"].startswith("rung 1: rank 3 of 4")


def test_pruned_configurations_are_never_measured():
    true = {"a": 1.0, "b": 9.0, "c": 2.0}
    trials, ran = simulate(true, rungs=2, eta=2, pruned={"b"})
    assert all(c != "b" for _, c in ran)
    result = outcome(list(true), {"b": "perplexity +9.0% ..."}, trials, 2, 2, None)
    assert result["b"]["status"] == "pruned" and result["b"]["rung"] is None
    assert choose(result, None) == "c"


def test_resume_runs_only_what_is_missing():
    true = {f"c{i}": float(i) for i in range(1, 7)}
    full, ran_full = simulate(true, rungs=3, eta=2)
    assert next_work(list(true), set(), full, 3, 2, None) == (None, [])
    assert simulate(true, rungs=3, eta=2, trials=full)[1] == []  # a complete search: nothing to do
    # interrupted after 4 trials: the re-run does exactly the rest, in the same order
    partial, first = simulate(true, rungs=3, eta=2, stop_after=4)
    resumed, rest = simulate(true, rungs=3, eta=2, trials=partial)
    assert first + rest == ran_full and resumed == full
    # one lost record of rung 1 is the only work left
    missing = dict(full)
    lost = next(k for k in full if k[0] == 1)
    del missing[lost]
    assert next_work(list(true), set(), missing, 3, 2, None) == (1, [lost[1]])


def test_an_unfinished_rung_leaves_the_earlier_rung_figures_and_says_so():
    true = {"a": 3.0, "b": 5.0, "c": 1.0}
    trials, _ = simulate(true, rungs=2, eta=2, stop_after=4)  # rung 0 (3) and one of rung 1's two
    result = outcome(list(true), {}, trials, 2, 2, None)
    measured_r1 = [c for c in true if (1, c) in trials]
    assert len(measured_r1) == 1
    other = next(c for c in ("a", "b") if c not in measured_r1)
    assert result[other]["rung"] == 0 and "rung 1 not measured" in result[other]["reason"]
    assert choose(result, None) == measured_r1[0]  # the deepest rung an eligible configuration reached


def test_nothing_eligible_means_no_winner():
    trials = {(0, "a"): rec(None, cid="a"), (0, "b"): rec(None, status="failed", cid="b")}
    result = outcome(["a", "b"], {}, trials, 2, 2, None)
    assert choose(result, None) is None
    assert result["a"]["reason"] == "rung 0: no load tried met the SLO"
    assert excluded(trials[(0, "b")], None).startswith("trial failed")


def test_pareto_front_keeps_points_no_other_beats_on_both_axes():
    pts = {"fast_bad": (0.2, 8.0), "slow_good": (0.9, 2.0), "mid": (0.5, 5.0), "dominated": (0.4, 4.0),
           "dup": (0.5, 5.0)}
    assert pareto_front(pts) == ["slow_good", "mid", "dup", "fast_bad"]
    assert pareto_front({}) == [] and pareto_front({"x": (0.0, 0.0)}) == ["x"]


def test_verdict_states_the_ratio_to_the_baseline_and_that_it_is_unconfirmed():
    from toolkit.optimize.output import front, verdict

    trials = {(0, "base"): {**rec(2.0, f1=0.50, cid="base"), "values": [2.0]},
              (0, "fast"): {**rec(4.0, f1=0.48, cid="fast"), "values": [4.0]},
              (1, "fast"): {**rec(5.0, f1=0.48, rung=1, cid="fast"), "values": [5.0, 5.0],
                            "interval": {"cv": 0.0}}}
    result = outcome(["base", "fast"], {}, trials, 2, 2, None)
    assert choose(result, None) == "fast"
    text = verdict(result, "fast", "base", trials, None, "concurrent requests", "complete")
    assert text.startswith("Chosen: fast: max load 5 concurrent requests under the SLO (rung 1, median of 2")
    assert "2.50x the baseline's 2 (measured at rung 0)" in text and "F1 -0.020 vs the baseline" in text
    assert "Not confirmed by an interleaved run" in text and text.endswith("Search: complete.")
    assert front(result) == ["base", "fast"]  # base: lower load but better F1, so both are on the front


def _point(meets, goodput=1.0):
    return {"slo": {"meets": meets, "goodput_req_s": goodput}}


def test_confirmation_judges_each_claim_and_the_ratio_interval():
    from toolkit.optimize.confirm import claim, judge

    def searched(value, goodputs):  # one max-load search per goodput, each with a trial at the max load
        return {"value": value, "rung": 1, "max_loads": [{"trials": [
            {"load": value, "slo": {"goodput_req_s": g}}, {"load": value + 1, "slo": {"goodput_req_s": 0.1}}]}
            for g in goodputs]}

    said = claim(searched(6, [1.5, 1.7, 1.6]), searched(3, [1.0]))
    assert said["load_ratio"] == 2.0 and said["goodput_ratio"] == pytest.approx(1.6)
    good = {("a", 3): _point(True), ("a", 6): _point(False), ("b", 6): _point(True), ("b", 3): _point(True)}
    ok = judge(said, good, [1.5, 1.7, 1.6])
    assert ok["reproduced"] and ok["claimed_within_interval"] and ok["failed"] == []
    assert ok["goodput_ratio"]["ci_low"] < 1.6 < ok["goodput_ratio"]["ci_high"]
    off = judge(said, good, [1.1, 1.12, 1.09])  # a tight interval far below the claim
    assert not off["reproduced"] and off["claimed_within_interval"] is False
    assert ok["outcome"] == "reproduced" and off["outcome"] == "not reproduced"
    missed = judge(said, {**good, ("b", 6): _point(False), ("a", 6): _point(True)}, [1.5, 1.7, 1.6])
    assert missed["failed"] == ["winner_meets_at_its_load", "baseline_misses_at_winner_load"]
    assert not missed["reproduced"] and missed["outcome"] == "not reproduced"
    weaker_base = judge(said, {**good, ("a", 3): _point(False)}, [1.5, 1.7, 1.6])  # the baseline did worse
    assert not weaker_base["reproduced"] and weaker_base["outcome"] == "lower bound"
    same = claim(searched(4, [1.0]), searched(4, [1.0]))  # equal loads: no "baseline misses" claim to check
    assert judge(same, {("a", 4): _point(True), ("b", 4): _point(True)}, [1.0, 1.1])["checks"][
        "baseline_misses_at_winner_load"] is None


def test_when_nothing_meets_the_slo_the_verdict_names_the_binding_metric_and_the_closest():
    from toolkit.optimize.output import binding, verdict

    def missed(cid, e2e, ttft, f1=0.5):
        trial = {"load": 1, "slo": {"percentile": 95.0, "thresholds": {"e2e_ms": 2000.0, "ttft_ms": 800.0},
                                    "at_percentile": {"e2e_ms": e2e, "ttft_ms": ttft}}}
        return {**rec(None, f1=f1, cid=cid), "max_loads": [{"trials": [trial]}], "values": [0.0]}

    trials = {(0, "a"): missed("a", 3000.0, 700.0), (0, "b"): missed("b", 2200.0, 900.0),
              (0, "c"): missed("c", 5000.0, 500.0), (0, "d"): missed("d", 4000.0, 400.0),
              (0, "e"): {**rec(4.0, f1=0.1, cid="e"), "values": [4.0]}}
    assert binding(trials[(0, "b")])["metric"] == "ttft_ms"  # +12.5% beats e2e's +10%
    assert binding(trials[(0, "a")]) == {"metric": "e2e_ms", "load": 1, "overshoot": 0.5, "value": 3000.0,
                                         "threshold": 2000.0, "percentile": 95.0}
    result = outcome(list("abcde"), {}, trials, 1, 2, 0.4)
    text = verdict(result, None, "a", trials, 0.4, "concurrent requests", "complete")
    assert text.startswith("No configuration met the SLO within the quality budget: met the SLO but not the "
                           "quality budget: e (4 concurrent requests, F1 0.100 below the quality floor 0.400")
    closest = text.split("closest: ", 1)[1]
    assert closest.index("b: ttft") < closest.index("a: e2e") < closest.index("d: e2e")  # +12%, +50%, +100%
    assert "c: e2e" not in closest and "(+12%)" in closest  # only the 3 closest
