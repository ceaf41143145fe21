"""The fetch chart's SVG: well-formed XML, escaped names, denied attempts marked exactly
where there are some (by shape, not colour alone), series folded into "other", an empty
state, and nothing the CSP would block (no inline style)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from api.console.chart import (
    MAX_SERIES,
    OTHER_COLOUR,
    activity_rows,
    fold_series,
    render_fetch_chart,
)
from vault.audit.activity import ACTIVITY_HOURS, FetchActivity, FetchSeries

SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 11, 26, 17, tzinfo=UTC)


def counts(**at: int) -> tuple[int, ...]:
    """168 hourly counts, zero but for ``h<index>=count``."""
    values = [0] * ACTIVITY_HOURS
    for key, value in at.items():
        values[int(key[1:])] = value
    return tuple(values)


def activity(*series: FetchSeries, group: str = "line") -> FetchActivity:
    return FetchActivity(group=group, start=START, hours=ACTIVITY_HOURS, series=series)  # type: ignore[arg-type]


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def texts(root: ET.Element) -> str:
    return " ".join("".join(el.itertext()) for el in root.iter(f"{SVG}text"))


def marker_hours(root: ET.Element) -> set[int]:
    return {
        int(el.attrib["data-hour"])
        for el in root.iter(f"{SVG}path")
        if el.attrib.get("class") == "denied-marker"
    }


BOT = FetchSeries("ln_bot", "Support bot", counts(h0=3, h100=2, h167=1), counts(h100=1, h167=4))
SHOP = FetchSeries("ln_shop", "Shop", counts(h5=7), counts(h6=2))


def test_a_labelled_image_with_axes_legend_and_bars() -> None:
    root = parse(render_fetch_chart(activity(BOT, SHOP), chart_id="lines"))
    assert root.tag == f"{SVG}svg"
    assert root.attrib["role"] == "img"
    assert root.attrib["aria-labelledby"] == "lines-title lines-desc"
    title = root.find(f"{SVG}title")
    desc = root.find(f"{SVG}desc")
    assert title is not None and title.attrib["id"] == "lines-title"
    assert title.text == "Credential fetches per hour over the last 7 days, per line"
    assert desc is not None and desc.attrib["id"] == "lines-desc"
    assert "13 fetches served and 7 denied" in (desc.text or "")
    words = texts(root)
    assert "Fetches per hour" in words and "Hour (UTC)" in words
    assert "Support bot" in words and "Shop" in words and "denied attempts" in words
    # One bar group per hour with any fetch, each with its numbers as hover text.
    hours = {int(g.attrib["data-hour"]): g for g in root.iter(f"{SVG}g") if "data-hour" in g.attrib}
    assert set(hours) == {0, 5, 6, 100, 167}
    hover = hours[100].find(f"{SVG}title")
    assert hover is not None and "Support bot: 2 served, 1 denied" in (hover.text or "")
    # A day tick per midnight: the window starts at 17:00, so 7 of them.
    assert (
        sum(1 for w in words.split() if w in {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}) == 7
    )


def test_denied_attempts_are_marked_exactly_where_there_are_some() -> None:
    root = parse(render_fetch_chart(activity(BOT, SHOP), chart_id="c"))
    assert marker_hours(root) == {6, 100, 167}
    hatched = [r for r in root.iter(f"{SVG}rect") if r.attrib.get("class") == "denied"]
    assert len(hatched) == 3
    assert all(r.attrib["fill"] == "url(#c-hatch)" for r in hatched)  # a pattern, not a colour
    assert root.find(f"{SVG}defs/{SVG}pattern[@id='c-hatch']") is not None


@hsettings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.integers(0, ACTIVITY_HOURS - 1), st.integers(0, 50), max_size=6),
            st.dictionaries(st.integers(0, ACTIVITY_HOURS - 1), st.integers(0, 50), max_size=6),
        ),
        max_size=8,
    )
)
def test_markers_follow_the_denied_counts(
    data: list[tuple[dict[int, int], dict[int, int]]],
) -> None:
    series = [
        FetchSeries(
            f"ln_{i}",
            f"line {i}",
            counts(**{f"h{k}": v for k, v in ok.items()}),
            counts(**{f"h{k}": v for k, v in no.items()}),
        )
        for i, (ok, no) in enumerate(data)
    ]
    root = parse(render_fetch_chart(activity(*series), chart_id="p"))
    expected = {h for h in range(ACTIVITY_HOURS) if any(s.denied[h] for s in series)}
    assert marker_hours(root) == expected


def test_names_are_escaped() -> None:
    evil = '<script>alert("x")</script> & \x07bell ]]> "quoted"'
    series = FetchSeries("ln_evil", evil, counts(h1=1), counts(h1=1))
    svg = render_fetch_chart(activity(series), chart_id="e")
    assert "<script>" not in svg and "\x07" not in svg
    root = parse(svg)
    words = texts(root) + " ".join(el.text or "" for el in root.iter(f"{SVG}title"))
    assert "<script>alert" in words  # shown as text, not markup
    assert '"quoted"' in words


def test_no_inline_style_anywhere() -> None:
    svg = render_fetch_chart(activity(BOT, SHOP), chart_id="s")
    root = parse(svg)
    assert all("style" not in el.attrib for el in root.iter())
    assert root.find(f".//{SVG}style") is None
    assert "<script" not in svg


def test_the_busiest_series_are_shown_and_the_rest_folded_into_other() -> None:
    many = [
        FetchSeries(f"ln_{i}", f"line {i}", counts(h10=20 - i), counts(h11=1 if i == 7 else 0))
        for i in range(8)
    ]
    folded = fold_series(activity(*many))
    assert [s.label for s in folded] == [f"line {i}" for i in range(MAX_SERIES)] + [
        "other (3 lines)"
    ]
    other = folded[-1]
    assert other.colour == OTHER_COLOUR
    assert other.success[10] == 15 + 14 + 13 and other.denied[11] == 1
    root = parse(render_fetch_chart(activity(*many), chart_id="m"))
    assert "other (3 lines)" in texts(root)
    assert marker_hours(root) == {11}


def test_nameless_series_show_their_id_or_what_is_unknown() -> None:
    gone = FetchSeries("ln_gone", None, counts(h1=1), counts())
    nobody = FetchSeries(None, None, counts(), counts(h2=1))
    labels = [s.label for s in fold_series(activity(gone, nobody, group="runner"))]
    assert labels == ["ln_gone", "unidentified caller"]


def test_empty_data_says_so() -> None:
    root = parse(render_fetch_chart(activity(), chart_id="none"))
    assert "No fetches in the last 7 days" in texts(root)
    desc = root.find(f"{SVG}desc")
    assert desc is not None and (desc.text or "").startswith("No fetches in the last 7 days")
    assert marker_hours(root) == set()
    assert not [g for g in root.iter(f"{SVG}g") if "data-hour" in g.attrib]


def test_the_table_rows_carry_the_same_numbers() -> None:
    rows = activity_rows(activity(BOT, SHOP))
    assert [(r.hour.hour, r.label, r.success, r.denied) for r in rows] == [
        (17, "Support bot", 3, 0),
        (22, "Shop", 7, 0),
        (23, "Shop", 0, 2),
        ((17 + 100) % 24, "Support bot", 2, 1),
        ((17 + 167) % 24, "Support bot", 1, 4),
    ]
    assert sum(r.success for r in rows) == 13 and sum(r.denied for r in rows) == 7


def test_an_odd_chart_id_is_refused() -> None:
    with pytest.raises(ValueError):
        render_fetch_chart(activity(), chart_id='x" onload="alert(1)')
