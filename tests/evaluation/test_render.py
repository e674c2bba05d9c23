"""The compare report a person reads, on reports built from known latencies and scores (conftest.make_report):
the recommendation by max load under the SLO, unstable and single-run warnings in the verdict, the layout
order (verdict, Pareto, goodput, stages, then collapsible tables) in HTML and Markdown, and a Pareto figure
whose axes start at zero with the quality budget shaded around the baseline's F1."""

from __future__ import annotations

import pytest

from toolkit.evaluation.compare import Gates, compare

SLO = {"e2e_ms": 5000.0, "percentile": 95.0}


def flat(n: int, ms: float) -> list[float]:
    """n requests spread evenly over ms ± 5%: a steady point."""
    return [ms * (0.95 + 0.1 * i / (n - 1)) for i in range(n)]


def scores(value: float, n: int = 20) -> dict[str, float]:
    return {f"q{i}": value for i in range(n)}


def ml(value, first_failing):
    return {"value": value, "first_failing": first_failing, "stopped": "bracket narrow enough"}


@pytest.fixture
def three(make_report):
    """base (max load 4), fast (8, F1 -0.01, unstable at c4), lossy (16 but F1 -0.3: outside the budget)."""
    steady = lambda ms: [flat(16, ms) for _ in range(3)]
    base = make_report("base", {"c1": steady(800), "c4": steady(2000)}, f1=scores(0.5), slo=SLO, max_load=ml(4, 5))
    fast = make_report("fast", {"c1": steady(500), "c4": [flat(16, 1000), flat(16, 1500), flat(16, 2000)]},
                       f1=scores(0.49), slo=SLO, max_load=ml(8, 9))
    lossy = make_report("lossy", {"c1": steady(300), "c4": steady(600)}, f1=scores(0.2), slo=SLO,
                        max_load=ml(16, None))
    return base, fast, lossy


def test_recommends_the_highest_max_load_within_the_quality_budget(three):
    c = compare(list(three), gates=Gates(max_f1_drop=0.05))
    assert c.recommendation == ("Recommended: fast: max load 8 concurrent requests under the SLO (e2e<=5000 ms at "
                                "p95), 2.0x the baseline's 4, F1 -0.010.")
    assert sorted(c.pareto) == ["base", "fast", "lossy"]  # each trades capacity for F1: none dominated
    unstable = [n for n in c.notes if n.startswith("Unstable: fast varies by more than 10% across repeats at c4 (")]
    assert unstable and "e2e_ms.p50 CV" in unstable[0]
    assert not any("Single runs" in n for n in c.notes)


def _order(text: str, needles: list[str]) -> list[int]:
    at = [text.find(n) for n in needles]
    assert all(i >= 0 for i in at), [n for n, i in zip(needles, at) if i < 0]
    return at


def test_html_and_markdown_lead_with_the_verdict_then_figures_then_collapsed_tables(three, tmp_path):
    from toolkit.evaluation.plots import all_figures
    from toolkit.evaluation.render import to_html, to_markdown

    c = compare(list(three), gates=Gates(max_f1_drop=0.05, max_p50_regression=0.5))
    figures = all_figures(c)
    assert list(figures)[:3] == ["pareto", "goodput", "stages"]
    html = to_html(c, figures)
    at = _order(html, ["id='verdict'", "Recommended: fast", "Gates: ", "Unstable: fast varies", "id='fig-pareto'",
                       "id='fig-goodput'", "id='fig-stages'", "<details"])
    assert at == sorted(at)
    assert html.find("<table") > html.find("<details")  # every table is inside a collapsible section
    assert "<script" not in html and "src='http" not in html and html.count("data:image/png;base64,") == len(figures)
    assert "⚠ CV" in html  # the unstable goodput/latency cells are flagged in the tables too
    md = to_markdown(c, {n: f"{n}.png" for n in figures})
    at = _order(md, ["Recommended: fast", "Gates: ", "Unstable: fast varies", "(pareto.png)", "(goodput.png)",
                     "(stages.png)", "<details"])
    assert at == sorted(at) and md.find("| variant") > md.find("<details")


def test_single_runs_say_so_and_fall_back_to_the_latency_rule(make_report):
    base = make_report("base", {"c4": [flat(16, 2000)]}, f1=scores(0.5))
    fast = make_report("fast", {"c4": [flat(16, 1000)]}, f1=scores(0.5))
    c = compare([base, fast], gates=Gates(max_p50_regression=0.1))
    assert any(n.startswith("Single runs (no repeats)") for n in c.notes)
    assert c.recommendation.startswith("Recommended: fast — fastest within the quality budget")
    assert "2.00x vs baseline base" in c.recommendation
    (g,) = c.gates
    assert g.outcome == "PASS" and "single run: interval from per-request bootstrap" in g.detail


def test_max_load_under_another_slo_is_not_ranked(make_report):
    base = make_report("base", {"c4": [flat(16, 2000)] * 2}, f1=scores(0.5), slo=SLO, max_load=ml(4, 5))
    other = make_report("other", {"c4": [flat(16, 1000)] * 2}, f1=scores(0.5), slo={"e2e_ms": 9000.0, "percentile": 95.0},
                        max_load=ml(32, None))
    c = compare([base, other])
    assert any("other: max load searched as concurrency under e2e<=9000 ms at p95" in n for n in c.notes)
    assert c.recommendation.startswith("Recommended: base (the baseline): max load 4 concurrent requests")


def test_pareto_axes_start_at_zero_with_the_quality_budget_shaded(three):
    from matplotlib.colors import to_hex

    from toolkit.evaluation.plots import BAND_COLOUR, pareto_axes

    c = compare(list(three), gates=Gates(max_f1_drop=0.05))
    plt, fig, ax = pareto_axes(c)
    try:
        assert ax.get_xlim()[0] == 0 and ax.get_ylim()[0] == 0
        assert ax.get_xlim()[1] >= 16  # lossy's max load is on the plot
        bands = [p for p in ax.patches if to_hex(p.get_facecolor()) == BAND_COLOUR]
        assert len(bands) == 1
        band = bands[0].get_bbox()  # x in axes fraction, y in data
        assert (band.y0, band.y1) == pytest.approx((0.45, 0.55)) and (band.x0, band.x1) == (0, 1)  # baseline F1 0.5 ± budget 0.05
        assert "max load under the SLO (concurrent requests" in ax.get_xlabel()
    finally:
        plt.close(fig)


def test_goodput_table_carries_the_interval_over_repeats(three):
    from toolkit.evaluation.render import goodput_table

    c = compare(list(three))
    head, rows = goodput_table(c)
    assert head[0] == "variant" and head[1].startswith("c1: goodput")
    # base at c1: 16 requests of 800 ms mean, one at a time, all within 5000 ms -> 1.25 req/s in every repeat
    assert rows[0][1] == "1.2500 [1.25, 1.25]; 100% good; meets p95 (3 repeats)"
    # fast at c4: repeats of 1000/1500/2000 ms mean at concurrency 4 -> 4, 2.67 and 2 req/s: unstable
    assert "⚠ CV" in rows[1][2] and rows[1][2].startswith("2.8889 [")


def test_pareto_front_with_capacity_higher_is_better():
    from toolkit.evaluation.compare import pareto_front

    # (capacity, F1): b carries more load than a at the same F1; c has less load but the best F1
    assert sorted(pareto_front({"a": (4.0, 0.5), "b": (8.0, 0.5), "c": (2.0, 0.6)}, lower_x=False)) == ["b", "c"]
