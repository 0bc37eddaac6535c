"""The report's charts (:mod:`kdcrowd.report.svg`): inline SVG written without matplotlib."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from kdcrowd.report.svg import Line, bar_chart, line_chart, scatter_chart, ticks

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == NS + "svg"
    return root


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(NS + "text")]


@pytest.mark.parametrize(("lo", "hi", "expected"), [(0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]), (-15.4, 0.6, [-15.0, -10.0, -5.0, 0.0]), (1.0, 90.0, [20.0, 40.0, 60.0, 80.0]), (3.0, 3.0, [3.0])])
def test_ticks_are_round_values_inside_the_range(lo: float, hi: float, expected: list[float]) -> None:
    assert ticks(lo, hi) == pytest.approx(expected)


def test_a_line_chart_breaks_at_nan_stars_the_given_points_and_names_its_series() -> None:
    svg = line_chart(
        [Line("teacher", [1, 2, 3, 4], [0.5, math.nan, 0.7, 0.8], "#1f77b4", stars=[(4.0, 0.8)]), Line("student", [5, 6], [0.6, 0.9], dots=True)],
        title="validation", xlabel="epoch", ylabel="agreement",
    )
    root = _parse(svg)
    polylines = [p.get("points", "").split() for p in root.iter(NS + "polyline")]
    assert [len(p) for p in polylines] == [1, 2, 2]  # the NaN splits the teacher's line in two
    assert len(list(root.iter(NS + "polygon"))) == 1  # one star
    assert len(list(root.iter(NS + "circle"))) == 2  # the student's dots
    texts = _texts(root)
    for word in ("validation", "epoch", "agreement", "teacher", "student"):
        assert word in texts, word
    # every point lies inside the plot area (the frame rectangle)
    frame = next(r for r in root.iter(NS + "rect") if r.get("fill") == "none")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    for line in polylines:
        for pt in line:
            x, y = map(float, pt.split(","))
            assert x0 <= x <= x1 and y0 <= y <= y1, pt


def test_bars_are_as_high_as_their_values_and_escape_the_class_names() -> None:
    svg = bar_chart(["a<b", "c"], {"final": np.array([0.25, 0.75]), "vote": np.array([0.5, 0.5])}, title="class balance", ylabel="share")
    root = _parse(svg)
    bars = [r for r in root.iter(NS + "rect") if r.find(NS + "title") is not None]
    assert len(bars) == 4
    heights = {r.find(NS + "title").text: float(r.get("height")) for r in bars}
    assert heights["final, c: 0.750"] == pytest.approx(3 * heights["final, a<b: 0.250"], rel=1e-3)
    assert heights["vote, a<b: 0.500"] == pytest.approx(heights["vote, c: 0.500"])
    assert "a<b" in _texts(root)


def test_a_log_scatter_leaves_out_what_it_cannot_place() -> None:
    svg = scatter_chart([1, 10, 100, 0, np.nan], [0.1, 0.5, 0.9, 0.5, 0.5], log_x=True, ylim=(0.0, 1.0), xlabel="labels", ylabel="accuracy")
    root = _parse(svg)
    xs = sorted(float(c.get("cx")) for c in root.iter(NS + "circle"))
    assert len(xs) == 3  # 0 and NaN have no place on a log axis
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.02)  # a decade is a decade
    assert {"1", "10", "100"} <= set(_texts(root))


def test_the_report_is_written_without_importing_matplotlib(heavy_imports) -> None:
    code = (
        "import numpy as np, pandas as pd\n"
        "from kdcrowd.data.annotations import Annotations\n"
        "from kdcrowd.report.html import FitPage, render_fit_html\n"
        "ann = Annotations.from_long(pd.DataFrame({'item': [0, 0, 1, 2, 2], 'worker': ['a', 'b', 'a', 'a', 'b'], 'label': [0, 1, 1, 0, 0]}))\n"
        "hist = [{'epoch': e, 'loss': 1.0 / e, 'val_accuracy': 0.5 + e / 10, 'memorization_mean': 0.1 * e, 'memorization_std': 0.01} for e in (1, 2, 3)]\n"
        "metrics = {'method': 'maxmig', 'history': hist, 'best_epoch': 3, 'versions': {}, 'seconds': 1.0}\n"
        "workers = pd.DataFrame({'worker': ['a', 'b'], 'n_labels': [3, 2], 'accuracy_estimate': [0.9, 0.6], 'agreement': [1.0, 0.5]})\n"
        "page = FitPage(metrics=metrics, classes=np.array([0, 1]), proba=np.array([[0.6, 0.4], [0.2, 0.8], [0.9, 0.1]]), annotations=ann,\n"
        "               item_ids=np.arange(3), workers=workers, matrices=np.tile(np.eye(2), (2, 1, 1)), matrices_source='estimated', items_description='3 items', settings={})\n"
        "text = render_fit_html(page)\n"
        "assert text.count('<svg') == 4, text.count('<svg')  # loss, validation, memorization, class balance\n"
    )
    assert "matplotlib" not in heavy_imports(code, timeout=120)


def test_a_scatter_of_many_points_draws_a_circle_per_pixel() -> None:
    # 200,000 workers with 1-10 labels each: the chart held a circle per worker (15 MB of
    # SVG); points on the same pixel are one circle now, as opaque as the stack was
    rng = np.random.default_rng(0)
    x = rng.integers(1, 11, 200_000)
    y = np.round(rng.random(200_000), 2)
    svg = scatter_chart(x, y, log_x=True, ylim=(0.0, 1.0))
    root = _parse(svg)
    circles = list(root.iter(NS + "circle"))
    assert len(circles) <= 10 * 101 and len(svg) < 200_000
    assert {c.get("fill-opacity") for c in circles} == {"1"}  # ~200 points each: opaque
    # a lone point keeps the opacity of one circle, two on one spot that of two stacked
    svg = scatter_chart([1, 1, 5], [0.5, 0.5, 0.9], ylim=(0.0, 1.0))
    assert sorted(c.get("fill-opacity") for c in _parse(svg).iter(NS + "circle")) == ["0.6", "0.84"]


def test_the_method_line_escapes_a_backbone_path() -> None:
    from types import SimpleNamespace

    from kdcrowd.report.practitioner import _method_text

    clf = SimpleNamespace(method="mv", backbone="auto", get_params=dict,
                          metrics_={"config": {"backbone": "torchvision:resnet18@/models/a&b<1>.pt", "train": {"epochs": 3}}})
    text = _method_text(clf)
    assert "a&amp;b&lt;1&gt;.pt" in text and "a&b" not in text


def test_long_class_names_of_few_classes_are_turned_so_they_do_not_overlap() -> None:
    # eight names of 24 characters stood level, 61 px apart and about 150 px wide each
    names = [f"very_long_class_name_{i:03d}" for i in range(8)]
    svg = bar_chart(names, {"final": np.full(8, 0.125)})
    assert "rotate(" in svg
    assert "rotate(" not in bar_chart(["cat", "dog", "bird"], {"final": np.full(3, 1 / 3)})
