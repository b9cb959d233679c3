"""The search grammar on its own: parsing, matching and sorting ``RunInfo`` objects, no SDK.

The same grammar runs against every backend in the conformance suite's filter table
(``trackkit.testing.FILTER_CASES``); here each rule is pinned down on runs built in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from trackkit.backend import Backend, Capabilities
from trackkit.entities import Metric, ParamValue, RunHandle, RunInfo
from trackkit.errors import InvalidInput
from trackkit.search import (
    Clause,
    Order,
    Query,
    build_query,
    matches,
    parse_filter,
    parse_order,
    select,
    sort_runs,
)
from trackkit.testing import FILTER_CASES
from trackkit.tracker import Tracker

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


def info(run_id: str = "r", **fields: Any) -> RunInfo:
    base: dict[str, Any] = {
        "id": run_id, "name": run_id, "experiment": "e", "status": "FINISHED", "params": {},
        "metrics": {}, "tags": {}, "start_time": T0, "end_time": None,
    }  # fmt: skip
    return RunInfo(**{**base, **fields})


def names(runs: Sequence[RunInfo]) -> list[str]:
    return [r.name for r in runs]


# -- parsing ------------------------------------------------------------------------------------
def test_filters_parse_in_mlflow_syntax() -> None:
    assert parse_filter("metrics.rmse < 7 AND params.model = 'lasso'") == (
        Clause("metrics", "rmse", "<", 7.0),
        Clause("params", "model", "=", "lasso"),
    )
    assert parse_filter("metrics.`my loss` >= 1e-3 and tags.\"git.commit\" != 'a''b'") == (
        Clause("metrics", "my loss", ">=", 0.001),
        Clause("tags", "git.commit", "!=", "a'b"),
    )
    assert parse_filter("tags.dev IN ('ana', \"bo\") and run_name LIKE 'ride%'") == (
        Clause("tags", "dev", "IN", ("ana", "bo")),
        Clause("attributes", "run_name", "LIKE", "ride%"),
    )
    assert parse_filter("attributes.status not in ('FAILED')") == (
        Clause("attributes", "status", "NOT IN", ("FAILED",)),
    )
    assert parse_filter("params.x IS NULL and tags.y is not null") == (
        Clause("params", "x", "IS NULL", None),
        Clause("tags", "y", "IS NOT NULL", None),
    )
    assert parse_filter("  ") == () and parse_filter(None) == ()


def test_every_entity_spelling_mlflow_accepts() -> None:
    for entity, canonical in (
        ("metric", "metrics"), ("metrics", "metrics"), ("`metrics`", "metrics"),
        ("param", "params"), ("params", "params"), ("parameter", "params"),
        ("parameters", "params"), ("tag", "tags"), ("tags", "tags"),
    ):  # fmt: skip
        value = "1" if canonical == "metrics" else "'1'"
        assert parse_filter(f"{entity}.k = {value}") == (Clause(canonical, "k", "=", value.strip("'") if canonical != "metrics" else 1.0),)  # fmt: skip
    for entity in ("attribute", "attributes", "attr", "run"):
        assert parse_filter(f"{entity}.status = 'X'") == (Clause("attributes", "status", "=", "X"),)
    # MLflow's attribute aliases, and attributes named without an entity
    assert parse_filter("created > 5 and attributes.`Run Name` = 'x' and run_id = 'i'") == (
        Clause("attributes", "start_time", ">", 5.0),
        Clause("attributes", "run_name", "=", "x"),
        Clause("attributes", "run_id", "=", "i"),
    )


def test_keys_and_values_quote_as_documented() -> None:
    assert parse_filter("params.model.alpha = '0.1'")[0].key == "model.alpha"
    assert parse_filter("params.`data-set` = 'x'")[0].key == "data-set"
    assert parse_filter("params.\"data set\" = 'x'")[0].key == "data set"
    assert parse_filter("params.'a-b' = 'x'")[0].key == "a-b"
    values = {
        "'a''b'": "a'b",  # a doubled quote
        r"'a\'b'": "a'b",  # or a backslash before it
        '"a""b"': 'a"b',
        r'"say \"hi\""': 'say "hi"',
        '"it\'s"': "it's",
        r"'C:\data'": r"C:\data",  # other backslashes are kept
        r"'ends\\'": "ends\\",
        "''": "",
    }
    for written, value in values.items():
        assert parse_filter(f"tags.t = {written}") == (Clause("tags", "t", "=", value),), written
    assert parse_filter("metrics.m <> -.5")[0] == Clause("metrics", "m", "!=", -0.5)
    assert parse_filter("metrics.m=2")[0] == Clause("metrics", "m", "=", 2.0)


def test_the_two_old_backend_drifts_are_settled_as_mlflow_does() -> None:
    # once accepted on W&B only: MLflow wants a number for a metric
    with pytest.raises(InvalidInput) as number:
        parse_filter("metrics.rmse < '7'")
    assert str(number.value) == (
        "search filter \"metrics.rmse < '7'\": metrics.rmse compares with a number, got '7'"
    )
    # once accepted on Neptune only: MLflow has no experiment attribute
    with pytest.raises(InvalidInput) as experiment:
        parse_filter("attributes.experiment = 'x'")
    assert str(experiment.value) == (
        "search filter \"attributes.experiment = 'x'\": attributes.experiment is not searched "
        "or ordered by: pass the experiment names to search_runs(experiment=...)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "params.model < 'a'",
            "params.model takes =, !=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL; not <",
        ),
        ("metrics.rmse LIKE '7%'", "metrics.rmse takes =, !=, <, <=, >, >=; not LIKE"),
        ("metrics.rmse IS NULL", "metrics.rmse takes =, !=, <, <=, >, >=; not IS NULL"),
        (
            "attributes.status IS NULL",
            "attributes.status takes =, !=, LIKE, ILIKE, IN, NOT IN; not IS NULL",
        ),
        ("attributes.start_time > '5'", "attributes.start_time compares with a number, got '5'"),
        ("params.alpha = 0.1", "params.alpha compares with a quoted string, got 0.1"),
        ("params.a = lasso", "params.a compares with a quoted string, got lasso"),
        (
            "model = 'a'",
            "'model' is not an attribute (use run_id, run_name, status, parent_id, start_time, end_time); name other keys as metrics.<key>, params.<key> or tags.<key>",
        ),
        (
            "attributes.user_id = 'a'",
            "attributes.user_id is not an attribute (use run_id, run_name, status, parent_id, start_time, end_time); name other keys as metrics.<key>, params.<key> or tags.<key>",
        ),
        (
            "Metrics.rmse < 7",
            "unknown entity 'Metrics' in 'Metrics.rmse': use metrics.<key>, params.<key>, tags.<key> or attributes.<name>",
        ),
        ("metrics.rmse <", "ends too early: expected a value for metrics.rmse <"),
        ("metrics.rmse", "ends too early: expected a comparison after metrics.rmse"),
        ("params.a = 'x' and", "ends too early: expected a name such as metrics.rmse"),
        ("and params.a = 'x'", "expected a name such as metrics.rmse, got 'and'"),
        ("params.a = 'x' or params.b = 'y'", "conditions are joined with AND, got 'or'"),
        ("params.a = 'x' params.b = 'y'", "conditions are joined with AND, got 'params.b'"),
        ("(params.a = 'x')", "expected a name such as metrics.rmse, got '('"),
        ("metrics.rmse == 7", "unknown comparison '==' after metrics.rmse"),
        ("params.a NOT LIKE 'x'", "unknown comparison 'NOT LIKE' after params.a"),
        ("params.a IS 'x'", "params.a IS must be followed by NULL or NOT NULL"),
        ("params.a IN 'x'", "params.a IN takes a list of quoted strings in parentheses"),
        ("params.a IN ()", "params.a IN takes at least one quoted string"),
        ("params.a IN ('x', 1)", "params.a IN takes quoted strings, got '1'"),
        ("params.a IN ('x' 'y')", "expected ',' or ')' in the IN list, got \"'y'\""),
        ("params.a = 'x", 'a quote is never closed in "\'x"'),
        (
            "params.a-b = 'x'",
            "cannot read \"-b = 'x'\": a key with characters other than letters, digits, '_' and '.' goes in backticks, e.g. params.`data-set`",
        ),
        ("metrics.m < +1", "cannot read '+1'"),
        ("metrics.`` < 1", "'metrics.``' names no key"),
    ],
)
def test_bad_filters_say_exactly_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_filter(text)
    assert str(caught.value) == f"search filter {text!r}: {message}"


def test_filter_must_be_text() -> None:
    with pytest.raises(InvalidInput, match="filter must be a string, got int"):
        parse_filter(7)  # type: ignore[arg-type]


def test_order_by_items() -> None:
    assert parse_order(None) == ()
    assert parse_order("metrics.rmse") == (Order("metrics", "rmse", True),)
    assert parse_order(["metrics.`my loss`  desc ", "start_time", "params.m ASC"]) == (
        Order("metrics", "my loss", False),
        Order("attributes", "start_time", True),
        Order("params", "m", True),
    )
    assert parse_order(("created DESC",)) == (Order("attributes", "start_time", False),)
    bad = {
        "metrics.rmse UP": "expected ASC or DESC after the name, got 'UP'",
        "metrics.rmse ASC DESC": "has 'DESC' after ASC or DESC",
        "": "names nothing to order by",
        "rmse": "'rmse' is not an attribute (use run_id, run_name, status, parent_id, start_time, "
        "end_time); name other keys as metrics.<key>, params.<key> or tags.<key>",
        "'rmse'": "expected a name such as metrics.rmse, got \"'rmse'\"",
    }
    for item, message in bad.items():
        with pytest.raises(InvalidInput) as caught:
            parse_order([item])
        assert str(caught.value) == f"order_by item {item!r}: {message}"
    with pytest.raises(InvalidInput, match="order_by must be a string or a list of strings"):
        parse_order([3])  # type: ignore[list-item]


def test_a_query_checks_every_argument() -> None:
    query = build_query(["a", "b"], " ", "metrics.m DESC", 5)
    assert query == Query(
        experiments=("a", "b"),
        orders=(Order("metrics", "m", False),),
        max_results=5,
        filter=None,
        order_by=("metrics.m DESC",),
    )
    assert build_query("a", "params.x = 'y'").filter == "params.x = 'y'"
    for kwargs, message in (
        ({"experiments": []}, "experiment must be a name or a list of names"),
        ({"experiments": ["a", ""]}, "experiment must be a name or a list of names"),
        ({"max_results": 0}, "max_results must be an int from 1 to 50000, got 0"),
        ({"max_results": True}, "max_results must be an int from 1 to 50000, got True"),
        ({"max_results": 50_001}, "max_results must be an int from 1 to 50000"),
        ({"filter": b"x"}, "filter must be a string, got bytes"),
    ):
        arguments: dict[str, Any] = {"experiments": "a", **kwargs}
        with pytest.raises(InvalidInput, match=message):
            build_query(**arguments)


# -- matching -----------------------------------------------------------------------------------
def test_clauses_match_with_mlflow_semantics() -> None:
    run = info(
        "a",
        params={"model": "Lasso", "path": r"C:\data"},
        metrics={"rmse": 6.0, "nan": float("nan")},
        tags={"dev": "ana"},
        start_time=T0,
        end_time=T0 + timedelta(seconds=2),
    )

    def holds(text: str) -> bool:
        return matches(parse_filter(text), run)

    assert holds("params.model LIKE 'La%'") and not holds("params.model LIKE 'la%'")
    assert holds("params.model ILIKE 'la_so'") and not holds("params.model LIKE 'La_'")
    assert holds("params.path = 'C:\\data'") and holds("params.path LIKE 'C:\\%'")
    assert holds("tags.dev NOT IN ('bo')") and not holds("tags.dev IN ('bo', 'Ana')")
    assert not holds("metrics.missing != 1")  # a missing value never matches
    assert not holds("params.missing NOT IN ('x')")
    assert holds("params.missing IS NULL") and not holds("params.model IS NULL")
    assert holds("tags.dev IS NOT NULL") and not holds("tags.missing IS NOT NULL")
    assert holds("metrics.nan != 1") and not holds("metrics.nan < 1")  # NaN, as in MLflow
    assert not holds("metrics.nan >= 0") and not holds("metrics.nan = 0")
    assert holds("attributes.run_id = 'a' and status = 'FINISHED'")
    started = (T0 - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(milliseconds=1)
    assert holds(f"attributes.start_time = {started} and end_time = {started + 2000}")
    assert not holds(f"attributes.start_time > {started}")
    assert not matches(parse_filter("end_time > 0"), info(end_time=None))
    assert matches((), run)
    # a naive datetime counts as UTC
    assert matches(parse_filter(f"start_time = {started}"), info(start_time=T0.replace(tzinfo=None)))  # fmt: skip


# -- sorting and selecting ----------------------------------------------------------------------
def test_ties_break_newest_first_then_by_name_then_by_id() -> None:
    runs = [
        info("1", name="b", start_time=T0),
        info("2", name="a", start_time=T0),
        info("0", name="a", start_time=T0),
        info("3", name="z", start_time=T0 + timedelta(seconds=1)),
        info("4", name="y", start_time=None),
    ]
    assert [r.id for r in sort_runs(runs)] == ["3", "0", "2", "1", "4"]
    # sub-millisecond differences are ties, as on a backend that keeps milliseconds
    close = [
        info("p", name="p", start_time=T0 + timedelta(microseconds=400)),
        info("q", name="o", start_time=T0),
    ]
    assert names(sort_runs(close)) == ["o", "p"]


def test_runs_sort_by_several_keys_with_nan_then_missing_last() -> None:
    runs = [
        info("a", metrics={"rmse": 2.0}, start_time=T0),
        info("b", metrics={}, start_time=T0),
        info("c", metrics={"rmse": 2.0}, start_time=T0 + timedelta(seconds=1)),
        info("d", metrics={"rmse": 1.0}),
        info("e", metrics={"rmse": float("nan")}),
    ]
    assert names(sort_runs(runs, parse_order("metrics.rmse"))) == ["d", "c", "a", "e", "b"]
    assert names(sort_runs(runs, parse_order("metrics.rmse DESC"))) == ["c", "a", "d", "e", "b"]
    two = parse_order(["metrics.rmse DESC", "attributes.run_name DESC"])
    assert names(sort_runs(runs, two)) == ["c", "a", "d", "e", "b"]
    three = parse_order(["metrics.rmse DESC", "attributes.start_time ASC"])
    assert names(sort_runs(runs, three)) == ["a", "c", "d", "e", "b"]
    assert names(sort_runs(runs, parse_order("params.missing"))) == ["c", "a", "b", "d", "e"]


def test_select_filters_sorts_cuts_and_drops_repeats() -> None:
    runs = [info(str(i), metrics={"m": float(i)}) for i in range(6)]
    query = build_query("e", "metrics.m >= 2", "metrics.m DESC", max_results=3)
    assert names(select(query, runs + runs[:2])) == ["5", "4", "3"]
    assert names(select(build_query("e", "metrics.m > 9"), runs)) == []
    assert runs == [info(str(i), metrics={"m": float(i)}) for i in range(6)]  # not mutated


# -- the filter table runs here too, on runs built in memory --------------------------------------
def test_the_conformance_filter_table_on_runs_in_memory() -> None:
    """The shipped table (``trackkit.testing``) evaluated without any backend."""
    from trackkit.testing import FILTER_RUNS, case_text

    start = {spec["name"]: T0 + timedelta(seconds=i) for i, spec in enumerate(FILTER_RUNS)}
    runs = [
        info(
            f"id-{spec['name']}",
            name=spec["name"],
            params={k: str(v) for k, v in spec["params"].items()},
            metrics=dict(spec["metrics"]),
            tags=dict(spec["tags"]),
            status=spec["status"],
            start_time=start[spec["name"]],
            end_time=start[spec["name"]] + timedelta(milliseconds=100),
        )
        for spec in FILTER_RUNS
    ]
    by_name = {r.name: r for r in runs}
    failures = []
    for case in FILTER_CASES:
        filter_text = case_text(case.filter, by_name)
        try:
            query = build_query("e", filter_text, case.order_by, case.max_results)
        except InvalidInput as e:
            if case.error is None or str(e) != case.error.format(filter=filter_text):
                failures.append(f"{case.filter!r}: {e}")
            continue
        if case.error is not None:
            failures.append(f"{case.filter!r} was accepted")
        elif names(select(query, runs)) != list(case.expected):
            failures.append(f"{case.filter!r}: {names(select(query, runs))}")
    assert not failures, "\n".join(failures)


# -- the core parses before any backend sees the search ------------------------------------------
class SearchBackend(Backend):
    """A backend holding fixed runs, recording each query it receives."""

    name = "search-fixture"
    capabilities = Capabilities(search_runs=True)

    def __init__(self, runs: list[RunInfo]) -> None:
        self.runs = runs
        self.queries: list[Query] = []

    def start_run(self, experiment: str | None, name: str | None, run_id: str | None) -> RunHandle:
        raise NotImplementedError

    def end_run(self, run_id: str, status: str) -> None:
        raise NotImplementedError

    def log_batch(
        self,
        run_id: str,
        params: Sequence[tuple[str, ParamValue]],
        metrics: Sequence[Metric],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        raise NotImplementedError

    def search_runs(self, query: Query) -> list[RunInfo]:
        self.queries.append(query)
        return list(self.runs)  # every run: the core filters, sorts and cuts


def test_the_tracker_parses_first_then_selects_from_what_the_backend_returns(
    tmp_path: Path,
) -> None:
    runs = [info(n, metrics={"m": float(i)}) for i, n in enumerate("abcd")]
    backend = SearchBackend(runs)
    tracker = Tracker(backend, journal_dir=tmp_path)
    with pytest.raises(InvalidInput, match="compares with a number"):
        tracker.search_runs("e", filter="metrics.m < 'x'")
    with pytest.raises(InvalidInput, match="ASC or DESC"):
        tracker.search_runs("e", order_by="metrics.m UP")
    assert backend.queries == []  # refused before the backend saw anything
    found = tracker.search_runs(
        "e", filter="metrics.m > 0", order_by="metrics.m DESC", max_results=2
    )
    assert names(found) == ["d", "c"]
    [query] = backend.queries
    assert query.clauses == (Clause("metrics", "m", ">", 0.0),)
    assert (query.filter, query.order_by, query.max_results) == ("metrics.m > 0", ("metrics.m DESC",), 2)  # fmt: skip
    tracker.close()
