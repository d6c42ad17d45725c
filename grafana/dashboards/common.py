"""House defaults of task-sidecar's dashboards: datasource, variables, panel shapes, links.

Dashboard modules call these with a title, a unit and queries from `queries`; they never
build SDK objects themselves, so every panel looks and links the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    piechart,
    prometheus,
    stat,
    statetimeline,
    table,
    text,
    timeseries,
)
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.runtime import UnknownDataquery
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import piechart as piechart_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import text as text_models

from sidecar.mixin.rules import DASHBOARDS, runbook_url
from sidecar.mixin.skeleton import hole

from . import queries

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["task-sidecar"]
GREEN, ORANGE, RED, BLUE, GREY = "green", "orange", "red", "blue", "text"
PanelBuilder = cogbuilder.Builder[models.Panel]


@dataclass(frozen=True)
class Q:
    """One query of a panel: PromQL, legend, and whether it is an instant query."""

    expr: str
    legend: str = ""
    instant: bool = False


@dataclass
class Row:
    title: str
    panels: list[PanelBuilder] = field(default_factory=list)


def num(path: str) -> Any:
    """A number of the mixin config (a threshold the alerts use too, so panels colour
    alike), as a hole the renderer fills; typed Any, as the SDK wants floats here."""
    return hole(path, "num")


def above(path: str) -> Any:
    """The first whole number above a threshold of the config (a colour step for a count
    that alerts when it is *above* the threshold)."""
    return hole(path, "add1")


# --- dashboards -------------------------------------------------------------------------------


def dashboard(
    key: str,
    title: str,
    description: str,
    rows: Sequence[Row],
    *,
    time_from: str = "now-6h",
    template: Sequence[cogbuilder.Builder[models.VariableModel]] | None = None,
) -> dash.Dashboard:
    """A finished dashboard: uid from alerting.rules.DASHBOARDS, variables (`template`, or
    the Prometheus ones of `variables()`), links, rows.

    Panels get ids in order (1, 2, ...), so the generated JSON does not change between runs.
    """
    built = (
        dash.Dashboard(title)
        .uid(DASHBOARDS[key])
        .description(description)
        .tags(TAGS)
        .editable()
        .timezone("utc")
        .time(time_from, "now")
        .refresh("1m")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .variables(list(template) if template is not None else variables())
        .links(
            [
                dash.DashboardLink("task-sidecar")
                .type(models.DashboardLinkType.DASHBOARDS)
                .tags(TAGS)
                .as_dropdown(True)
                .include_vars(True)
                .keep_time(True),
                dash.DashboardLink("Runbooks")
                .type(models.DashboardLinkType.LINK)
                .url(runbook_index())
                .icon("doc")
                .target_blank(True),
            ]
        )
    )
    panel_id = 0
    for row in rows:
        panel_id += 1
        built.with_row(dash.Row(row.title).id(panel_id))
        for panel in row.panels:
            panel_id += 1
            panel.id(panel_id)
            built.with_panel(panel)
    return built


def variables() -> list[cogbuilder.Builder[models.VariableModel]]:
    all_option = models.VariableOption(selected=True, text="All", value="$__all")
    sidecar_url = hole("links.sidecar_url")
    return [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_variable("cluster", "Cluster", queries.CLUSTER_VALUES, all_option),
        _query_variable("namespace", "Namespace", queries.NAMESPACE_VALUES, all_option),
        _query_variable("job", "Job", queries.JOB_VALUES, all_option),
        _query_variable("instance", "Instance", queries.INSTANCE_VALUES, all_option),
        _query_variable("task", "Task", queries.TASK_VALUES, all_option),
        dash.TextBoxVariable("sidecar_url")
        .label("Sidecar API")
        .description("Base URL of the sidecar's action API, for the panel links")
        .default_value(sidecar_url)
        .current(_option(sidecar_url)),
    ]


def _option(value: str) -> models.VariableOption:
    return models.VariableOption(selected=True, text=value, value=value)


def _query_variable(
    name: str, label: str, query: str, all_option: models.VariableOption
) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": f"{name}-values"})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(all_option)
    )


# --- links -------------------------------------------------------------------------------------


def runbook(alert: str) -> dash.DashboardLink:
    """A panel link to the runbook of `alert` (the same URL the alert carries)."""
    return dash.DashboardLink(f"Runbook: {alert}").url(runbook_url(alert)).target_blank(True)


def runbook_index() -> str:
    return hole("links.runbook_base_url", "url") + "/README.md"


def api(title: str, path: str) -> dash.DashboardLink:
    """A panel link into the sidecar's action API (needs a viewer or operator token)."""
    return dash.DashboardLink(title).url("${sidecar_url}" + path).target_blank(True)


# --- thresholds ----------------------------------------------------------------------------------


def steps(base: str, *steps_: tuple[float, str]) -> dash.ThresholdsConfig:
    """Absolute thresholds: `base` colour below the first step, then each (value, colour)."""
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps(
            [models.Threshold(value=None, color=base)]
            + [models.Threshold(value=value, color=color) for value, color in steps_]
        )
    )


def neutral() -> dash.ThresholdsConfig:
    """For figures with no good or bad value (rates of events by kind)."""
    return steps(GREEN)


# --- panels --------------------------------------------------------------------------------------


def _targets(items: Sequence[Q], *, as_table: bool = False) -> list[prometheus.Dataquery]:
    out = []
    for index, item in enumerate(items):
        target = (
            prometheus.Dataquery()
            .expr(item.expr)
            .legend_format(item.legend or "__auto")
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
        if item.instant:
            target.instant()
        else:
            target.range()
        if as_table:
            target.format(prometheus_models.PromQueryFormat.TABLE)
        out.append(target)
    return out


def _common(
    panel: Any,
    title: str,
    description: str,
    unit: str,
    items: Sequence[Q],
    thresholds: dash.ThresholdsConfig,
    links: Sequence[dash.DashboardLink],
    width: int,
    height: int,
) -> Any:
    panel.title(title).description(description).datasource(DATASOURCE).unit(unit)
    panel.targets(_targets(items)).thresholds(thresholds).span(width).height(height)
    if links:
        panel.links(list(links))
    return panel


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    items: Sequence[Q],
    *,
    thresholds: dash.ThresholdsConfig | None = None,
    links: Sequence[dash.DashboardLink] = (),
    stacked: bool = False,
    bars: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    width: int = 12,
    height: int = 8,
) -> timeseries.Panel:
    panel = timeseries.Panel()
    _common(panel, title, description, unit, items, thresholds or neutral(), links, width, height)
    panel.legend(
        common.VizLegendOptions()
        .display_mode(common_models.LegendDisplayMode.TABLE)
        .placement(common_models.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["lastNotNull", "max"])
    )
    panel.tooltip(common.VizTooltipOptions().mode(common_models.TooltipDisplayMode.MULTI))
    panel.line_width(1).fill_opacity(20 if stacked or bars else 10)
    if thresholds is not None:
        panel.thresholds_style(
            common.GraphThresholdsStyleConfig().mode(common_models.GraphThresholdsStyleMode.DASHED)
        )
    if stacked:
        panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    if bars:
        panel.draw_style(common_models.GraphDrawStyle.BARS)
    if min_value is not None:
        panel.min(min_value)
    if max_value is not None:
        panel.max(max_value)
    return panel


def stat_panel(
    title: str,
    description: str,
    unit: str,
    item: Q,
    *,
    thresholds: dash.ThresholdsConfig,
    links: Sequence[dash.DashboardLink] = (),
    width: int = 4,
    height: int = 5,
    decimals: int | None = None,
) -> stat.Panel:
    panel = stat.Panel()
    _common(panel, title, description, unit, [item], thresholds, links, width, height)
    panel.color_mode(common_models.BigValueColorMode.BACKGROUND)
    panel.graph_mode(common_models.BigValueGraphMode.AREA)
    panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def pie_panel(
    title: str,
    description: str,
    unit: str,
    item: Q,
    *,
    links: Sequence[dash.DashboardLink] = (),
    width: int = 8,
    height: int = 8,
) -> piechart.Panel:
    panel = piechart.Panel()
    _common(panel, title, description, unit, [item], neutral(), links, width, height)
    panel.pie_type(piechart_models.PieChartType.DONUT)
    panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel.legend(
        piechart.PieChartLegendOptions()
        .display_mode(common_models.LegendDisplayMode.TABLE)
        .placement(common_models.LegendPlacement.RIGHT)
        .show_legend(True)
        .values(
            [
                piechart_models.PieChartLegendValues.VALUE,
                piechart_models.PieChartLegendValues.PERCENT,
            ]
        )
    )
    return panel


def bar_panel(
    title: str,
    description: str,
    unit: str,
    item: Q,
    *,
    thresholds: dash.ThresholdsConfig | None = None,
    links: Sequence[dash.DashboardLink] = (),
    data_links: Sequence[dash.DashboardLink] = (),
    vertical: bool = False,
    width: int = 8,
    height: int = 8,
) -> bargauge.Panel:
    panel = bargauge.Panel()
    _common(panel, title, description, unit, [item], thresholds or neutral(), links, width, height)
    panel.display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
    panel.orientation(
        common_models.VizOrientation.VERTICAL
        if vertical
        else common_models.VizOrientation.HORIZONTAL
    )
    panel.reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    panel.min(0)
    if data_links:
        panel.data_links(list(data_links))
    return panel


def table_panel(
    title: str,
    description: str,
    unit: str,
    item: Q,
    *,
    thresholds: dash.ThresholdsConfig | None = None,
    links: Sequence[dash.DashboardLink] = (),
    data_links: Sequence[dash.DashboardLink] = (),
    width: int = 12,
    height: int = 8,
) -> table.Panel:
    panel = table.Panel()
    _common(panel, title, description, unit, [item], thresholds or neutral(), links, width, height)
    panel.targets(_targets([item], as_table=True))
    panel.with_transformation(
        models.DataTransformerConfig(
            id_val="organize",
            options={"excludeByName": {"Time": True}, "renameByName": {"Value": title}},
        )
    )
    panel.sort_by([common.TableSortByFieldState().display_name(title).desc(True)])
    if data_links:
        panel.data_links(list(data_links))
    return panel


def state_panel(
    title: str,
    description: str,
    item: Q,
    *,
    states: dict[int, tuple[str, str]],
    links: Sequence[dash.DashboardLink] = (),
    width: int = 12,
    height: int = 8,
) -> statetimeline.Panel:
    """A state timeline whose values map to (text, colour) pairs."""
    panel = statetimeline.Panel()
    _common(panel, title, description, "none", [item], neutral(), links, width, height)
    panel.mappings(
        [
            models.ValueMap(
                options={
                    str(value): models.ValueMappingResult(text=label, color=color, index=i)
                    for i, (value, (label, color)) in enumerate(sorted(states.items()))
                }
            )
        ]
    )
    panel.show_value(common_models.VisibilityMode.NEVER)
    panel.merge_values(True)
    return panel


# --- PostgreSQL (the DLQ explorer) ---------------------------------------------------------

# Grafana's built-in PostgreSQL datasource (Grafana 11), chosen by the variable `postgres`.
PG_TYPE = "grafana-postgresql-datasource"
PG_DATASOURCE = models.DataSourceRef(type_val=PG_TYPE, uid="${postgres}")


@dataclass(frozen=True)
class Sql:
    """One SQL query of a panel, with Grafana's macros and variables; `time_series` for
    the (time, metric, value) shape, else a table."""

    sql: str
    time_series: bool = False


class SqlTarget(cogbuilder.Builder[cogvariants.Dataquery]):
    """A raw-SQL target of the PostgreSQL datasource (the SDK has no builder for it)."""

    def __init__(self, query: Sql, ref_id: str) -> None:
        self._query = UnknownDataquery(
            {
                "datasource": {"type": PG_TYPE, "uid": "${postgres}"},
                "editorMode": "code",
                "format": "time_series" if query.time_series else "table",
                "rawQuery": True,
                "rawSql": query.sql,
                "refId": ref_id,
            }
        )

    def build(self) -> cogvariants.Dataquery:
        return self._query


def sql_panel(panel: Any, query: Sql) -> Any:
    """A panel made by one of the shapes above, reading PostgreSQL instead."""
    return panel.datasource(PG_DATASOURCE).targets([SqlTarget(query, "A")])


def sql_table_panel(
    title: str,
    description: str,
    query: Sql,
    *,
    data_links: Sequence[dash.DashboardLink] = (),
    wrap: bool = False,
    width: int = 12,
    height: int = 8,
) -> table.Panel:
    """A table of a query's rows, its columns as the query names them."""
    panel = table.Panel().title(title).description(description).unit("none")
    panel.thresholds(neutral()).span(width).height(height)
    panel.cell_options(common_models.TableAutoCellOptions(wrap_text=wrap))
    if data_links:
        panel.data_links(list(data_links))
    return sql_panel(panel, query)


def sql_variable(name: str, label: str, query: str) -> dash.QueryVariable:
    """Multi-value, with "All" standing for `'*'` (see `sql_in`): a list of every value
    would be `IN ()`, a syntax error, while the DLQ is empty."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(PG_DATASOURCE)
        .query(query)
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(SQL_ALL)
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


# Grafana inserts a custom "All" value as it is, unquoted: this is SQL.
SQL_ALL = "'*'"


def sql_in(column: str, variable: str) -> str:
    """The condition of a multi-value variable made by `sql_variable` (or with its All)."""
    return f"({SQL_ALL} IN (${variable}) OR {column} IN (${variable}))"


def text_panel(title: str, markdown: str, *, width: int = 8, height: int = 8) -> text.Panel:
    return (
        text.Panel()
        .title(title)
        .mode(text_models.TextMode.MARKDOWN)
        .content(markdown)
        .span(width)
        .height(height)
    )
