"""The max-load search (toolkit.evaluation.maxload.search) on synthetic response curves whose answer follows from
how they were built, its report line, its trial plans, and the CLI's refusals before any slow work."""

from __future__ import annotations

import pytest

from toolkit.evaluation.maxload import describe, search, trial_plan
from toolkit.evaluation.report import MaxLoad, MaxLoadTrial, SLOAttainment, Summary
from toolkit.evaluation.suite import LoadSection, MaxLoadSection, PoissonSection


def curve(passes):
    """A measure() over a synthetic pass/miss curve; keeps each trial's load as its measurement."""
    def measure(load):
        return passes(load), load
    return measure


def tried(res):
    return [load for load, _, _ in res.trials]


@pytest.mark.parametrize("knee", [1, 2, 3, 5, 6, 7, 8, 13, 31, 32, 33, 63])
def test_finds_the_knee_of_a_monotone_curve_exactly(knee):
    res = search(curve(lambda c: c <= knee), start=1, limit=64, resolution=1, budget_s=1e9, integer=True)
    assert res.value == knee and res.first_failing == knee + 1
    assert "within the resolution" in res.stopped
    assert len(tried(res)) == len(set(tried(res)))  # no load measured twice


def test_knee_from_a_later_start_and_a_coarser_resolution():
    res = search(curve(lambda c: c <= 21), start=3, limit=64, resolution=1, budget_s=1e9, integer=True)
    assert tried(res)[:4] == [3, 6, 12, 24] and (res.value, res.first_failing) == (21, 22)
    coarse = search(curve(lambda c: c <= 21), start=3, limit=64, resolution=4, budget_s=1e9, integer=True)
    assert coarse.value <= 21 < coarse.first_failing and coarse.first_failing - coarse.value <= 4
    assert len(coarse.trials) < len(res.trials)


def test_poisson_rate_is_bisected_to_the_resolution():
    res = search(curve(lambda r: r <= 2.7), start=0.5, limit=16, resolution=0.1, budget_s=1e9, integer=False)
    assert tried(res)[:4] == [0.5, 1.0, 2.0, 4.0]
    assert res.value <= 2.7 < res.first_failing and res.first_failing - res.value <= 0.1


def test_first_load_missing_gives_no_value():
    res = search(curve(lambda c: False), start=2, limit=64, resolution=1, budget_s=1e9, integer=True)
    assert res.value is None and res.first_failing == 2 and tried(res) == [2]
    assert "first load tried (2) missed" in res.stopped


@pytest.mark.parametrize("limit,integer,expected", [(10, True, [1, 2, 4, 8, 10]), (64, True, [1, 2, 4, 8, 16, 32, 64]),
                                                    (10.5, True, [1, 2, 4, 8, 10]), (3.0, False, [0.5, 1.0, 2.0, 3.0])])
def test_never_exceeds_the_limit(limit, integer, expected):
    start = 1 if integer else 0.5
    res = search(curve(lambda x: True), start=start, limit=limit, resolution=1, budget_s=1e9, integer=integer)
    assert tried(res) == expected and max(tried(res)) <= limit
    assert res.value == expected[-1] and res.first_failing is None and "reached the limit" in res.stopped


def test_start_equal_to_limit_is_one_trial():
    res = search(curve(lambda c: True), start=4, limit=4, resolution=1, budget_s=1e9, integer=True)
    assert tried(res) == [4] and res.value == 4


class FakeClock:
    """Each trial costs ``cost`` seconds of a clock the test owns."""

    def __init__(self, cost):
        self.now, self.cost = 0.0, cost

    def __call__(self):
        return self.now

    def measure(self, passes):
        def m(load):
            self.now += self.cost(load) if callable(self.cost) else self.cost
            return passes(load), load
        return m


def test_stops_on_the_time_budget_and_says_so():
    clock = FakeClock(10.0)
    res = search(clock.measure(lambda c: c <= 100), start=1, limit=1000, resolution=1, budget_s=25, integer=True,
                 clock=clock)
    # after trial 2 (20 s used), another 10 s trial would end at 30 s > 25 s
    assert tried(res) == [1, 2] and res.value == 2 and res.first_failing is None
    assert "time budget (25 s)" in res.stopped and "2 is a lower bound" in res.stopped


def test_budget_during_bisection_names_the_bracket():
    clock = FakeClock(10.0)
    res = search(clock.measure(lambda c: c <= 5), start=1, limit=64, resolution=1, budget_s=45, integer=True,
                 clock=clock)
    assert tried(res) == [1, 2, 4, 8] and (res.value, res.first_failing) == (4, 8)
    assert "knee lies between 4 and 8" in res.stopped


def test_the_slowest_trial_so_far_sizes_the_budget_check():
    clock = FakeClock(lambda c: 30.0 if c == 2 else 1.0)
    res = search(clock.measure(lambda c: c <= 100), start=1, limit=64, resolution=1, budget_s=61.5, integer=True,
                 clock=clock)
    # after 2: 31 s used, 31 + 30 <= 61.5 allows 4; after 4: 32 + 30 > 61.5 stops before 8 though 4 took 1 s
    assert tried(res) == [1, 2, 4]


def test_first_trial_runs_even_with_a_tiny_budget():
    clock = FakeClock(10.0)
    res = search(clock.measure(lambda c: True), start=1, limit=64, resolution=1, budget_s=0.001, integer=True,
                 clock=clock)
    assert tried(res) == [1] and res.value == 1 and "budget" in res.stopped


@pytest.mark.parametrize("name,passes,value,first_failing", [
    # a spurious miss at 4 caps the answer below it although 5 and 6 pass: 6 is never tried
    ("spurious miss", lambda c: c <= 6 and c != 4, 3, 4),
    # a miss at 3 that doubling skips over is never seen: the answer rests on the loads actually tried
    ("unseen miss", lambda c: c <= 5 and c != 3, 5, 6),
    # a spurious pass at 6 above a knee at 5 is trusted inside the bracket 4..8
    ("spurious pass", lambda c: c <= 5 or c == 6, 6, 7),
])
def test_non_monotone_curves_report_the_highest_load_with_every_lower_tried_load_passing(name, passes, value,
                                                                                          first_failing):
    res = search(curve(passes), start=1, limit=64, resolution=1, budget_s=1e9, integer=True)
    assert (res.value, res.first_failing) == (value, first_failing), name
    for load, meets, _ in res.trials:  # every miss seen lies above the value; everything at or below it passed
        assert meets == (load <= res.value)
    assert res.first_failing == min(load for load, meets, _ in res.trials if not meets)


def _trial(load, meets, e2e_p95, share, errors=0):
    slo = SLOAttainment(percentile=95, thresholds={"e2e_ms": 2000}, goodput_req_s=1.0, good_share=share,
                        met_share={"e2e_ms": share}, at_percentile={"e2e_ms": e2e_p95}, meets=meets)
    return MaxLoadTrial(load=load, meets=meets, slo=slo, e2e_ms=Summary(p95=e2e_p95, n=16), req_s=1.0, errors=errors)


def test_the_report_line():
    slo = {"e2e_ms": 2000.0, "percentile": 95.0}
    ml = MaxLoad(mode="concurrency", unit="concurrent requests", value=6, first_failing=7, slo=slo,
                 trials=[_trial(4, True, 1500, 1.0), _trial(8, False, 4000, 0.5), _trial(6, True, 1900, 1.0),
                         _trial(7, False, 2310, 0.9)], stopped="bracket 6..7 within the resolution (1)")
    assert describe(ml) == ("max load under SLO (e2e<=2000 ms at p95): 6 concurrent requests; 7 missed "
                            "(p95 e2e 2,310 ms)")
    none = MaxLoad(mode="concurrency", unit="concurrent requests", value=None, first_failing=1, slo=slo,
                   trials=[_trial(1, False, 2100, 0.5, errors=2)], stopped="the first load tried (1) missed the SLO")
    assert describe(none).endswith("none: the first load tried, 1 concurrent requests, missed (p95 e2e 2,100 ms, "
                                   "2 errors)")
    top = MaxLoad(mode="poisson", unit="req/s", value=2.5, first_failing=None, slo=slo,
                  trials=[_trial(2.5, True, 100, 1.0)], stopped="reached the limit (2.5) with the SLO met")
    assert describe(top).endswith(": 2.5 req/s; no load tried missed")


def test_trial_plans_send_at_least_one_request_per_worker():
    load = LoadSection(concurrency=[1], warmup=3, max_load=MaxLoadSection(requests=4),
                       poisson=PoissonSection(rate_rps=1, requests=5, seed=7))
    small, big = trial_plan(load, 2), trial_plan(load, 12)
    assert (small.concurrency, small.requests, small.warmup, small.name) == (2, 4, 3, "maxload-c2")
    assert (big.concurrency, big.requests) == (12, 12)
    load.max_load = MaxLoadSection(mode="poisson", requests=9)
    p = trial_plan(load, 1.5)
    assert (p.mode, p.rate_rps, p.requests, p.seed, p.name) == ("poisson", 1.5, 9, 7, "maxload-poisson1.5")


# --- the CLI refuses before any slow work (no model is loaded: the model path does not even exist) ----------

def _suite(tmp_path, extra=""):
    path = tmp_path / "suite.yaml"
    path.write_text(f"name: t\nload: {{concurrency: [1]{extra}}}\n")
    return path


@pytest.mark.parametrize("extra,flags,message", [
    ("", ["--find-max-load"], "--find-max-load: no SLO to meet (add an slo: section to"),
    ("", ["--find-max-load", "--slo", "e2e:100", "--no-serve"], "--find-max-load: cannot be combined with --no-serve"),
    (", max_load: {start: 1.5, limit: 1.9}", ["--find-max-load", "--slo", "e2e:100"],
     "load.max_load: no whole concurrency between start 1.5 and limit 1.9"),
    ("", ["--repeats", "0"], "--repeats: 0 is not a positive number of runs"),
])
def test_cli_refuses_bad_load_settings_in_one_line(tmp_path, capsys, extra, flags, message):
    from toolkit.cli import main

    rc = main(["eval", "--model", str(tmp_path / "no-model"), "--suite", str(_suite(tmp_path, extra)), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1, err
