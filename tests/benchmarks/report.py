"""The table: which figures are rows, their targets, and whether flowkit meets them.

Issue 9 states its targets against the hand-rolled loop measured in the same run (a ratio
holds across machines, an absolute figure does not), so a Target is either absolute or a
multiple of the loop's figure; ``meets`` is computed from the ratio. Rows the issue does not
cover keep their absolute targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet import EXECUTORS, FLEET_DRIVERS, FLEET_TASKS, SUPERVISORS
from proxied import DELAY_MS, PROXY_RQ_TASKS
from rich.console import Console
from rich.table import Table
from workloads import W1_TASKS

SYSTEMS = (("flowkit", "flowkit"), ("RQ", "rq"), ("loop", "loop"))


@dataclass(frozen=True)
class Target:
    """``value`` itself, or ``value`` times the loop's figure in the same run (``vs_loop``)."""

    value: float
    vs_loop: bool = False
    note: str = ""

    def text(self, higher: bool) -> str:
        sign = "≥" if higher else "≤"
        if not self.vs_loop:
            return f"{sign} {self.value:g}{self.note}"
        return f"{sign} loop" if self.value == 1 else f"{sign} {self.value:g}x loop"

    def meets(self, flowkit: float | None, loop: float | None, higher: bool) -> bool | None:
        """None when flowkit (or, for a ratio, the loop) has no figure."""
        if flowkit is None or (self.vs_loop and not loop):
            return None
        value = flowkit / loop if self.vs_loop and loop else flowkit
        return value >= self.value if higher else value <= self.value


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    unit: str
    higher_is_better: bool
    target: Target | None = None


FLEET = (f"fleet {SUPERVISORS}x{EXECUTORS} (loop: {SUPERVISORS * EXECUTORS} workers), "
         f"{FLEET_DRIVERS} drivers x {FLEET_TASKS:,} noop")
PROXY = f"via +{DELAY_MS:g} ms/way proxy"

METRICS = [
    Metric("w1_median", f"W1 map {W1_TASKS} noop, median of 3", "tasks/s", True,
           Target(1.5, vs_loop=True)),
    Metric("w1_best", f"W1 map {W1_TASKS} noop, best of 3", "tasks/s", True),
    Metric("w2_p50", "W2 200 sequential round trips, p50", "ms", False,
           Target(1.5, vs_loop=True)),
    Metric("w2_p99", "W2 200 sequential round trips, p99", "ms", False),
    Metric("w3_seconds", "W3 200 x sleep 10 ms (ideal 1.0), median of 3", "s", False,
           Target(1.05, note=" (ideal +5%)")),
    Metric("w4_rate", "W4 200 tasks x 1 MiB argument, median of 3", "tasks/s", True,
           Target(1, vs_loop=True)),
    Metric("import_s", "import time, best of 5", "s", False, Target(0.3)),
    Metric("cache_hit_p50", "cache hit, submit + result, p50", "ms", False, Target(1.0)),
    Metric("cache_hit_p99", "cache hit, submit + result, p99", "ms", False),
    Metric("dash_html_p50", "dashboard: run page with 100k task runs, p50", "s", False,
           Target(0.3)),
    Metric("dash_html_max", "dashboard: run page with 100k task runs, max of 20", "s", False,
           Target(0.3)),
    Metric("dash_json_p50", "dashboard: /api/runs/{id} with 100k task runs, p50", "s", False,
           Target(0.3)),
    Metric("recovery_s", "recovery after worker SIGKILL (lease 5 s)", "s", False, Target(7)),
    Metric("w1_cmds", "W1 Redis commands/task (incl. in Lua)", "cmds", False, Target(12)),
    Metric("w1_reads", "W1 Redis read events/task (round trips)", "reads", False,
           Target(0.1)),
    Metric("w1_lua", "W1 Lua script calls/task", "calls", False),
    Metric("w1_cpu", "W1 Redis server CPU/task (INFO cpu)", "ms", False,
           Target(1, vs_loop=True)),
    Metric("fleet_rate", f"{FLEET}: submit to last result", "tasks/s", True),
    Metric("fleet_cpu", "fleet: Redis server CPU/task (INFO cpu)", "ms", False),
    Metric("fleet_ceiling", "fleet: one Redis core's ceiling, 1 / server CPU per task",
           "tasks/s", True),
    Metric("fleet_cmds", "fleet: Redis commands/task (incl. in Lua)", "cmds", False),
    Metric("px_w1", f"W1 {PROXY} (RQ: {PROXY_RQ_TASKS} tasks), median of 3", "tasks/s", True),
    Metric("px_w1_kept", f"W1 {PROXY}: share of loopback W1 kept", "share", True,
           Target(0.5, note=" (most)")),
    Metric("px_w2_p50", f"W2 {PROXY}, 100 round trips, p50", "ms", False),
]


def build_rows(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: each system's figure, flowkit's ratios, target and verdict."""
    rows = []
    for m in METRICS:
        fk, rqv, loop = (measured.get(name, {}).get(m.key) for name, _ in SYSTEMS)
        target = m.target
        rows.append({"workload": m.workload, "metric": m.key, "unit": m.unit,
                     "better": "higher" if m.higher_is_better else "lower", "flowkit": fk,
                     "rq": rqv, "ratio": fk / rqv if fk is not None and rqv else None,
                     "loop": loop, "ratio_loop": fk / loop if fk is not None and loop else None,
                     "target": None if target is None else target.text(m.higher_is_better),
                     "target_value": None if target is None else target.value,
                     "target_vs_loop": None if target is None else target.vs_loop,
                     "meets_target": None if target is None
                     else target.meets(fk, loop, m.higher_is_better)})
    return rows


def fmt(v: float | None) -> str:
    """A figure: thousands separated from 100 up, 4 significant digits below."""
    return "n/a" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"


def ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}x"


COLUMNS = ("workload", "unit", "flowkit", "RQ", "flowkit/RQ", "loop", "flowkit/loop", "better",
           "target", "meets")


def cells(row: dict[str, Any]) -> list[str]:
    """A row's cells as text, in COLUMNS order (the terminal and the README share them)."""
    meets = {None: "-", True: "yes", False: "no"}[row["meets_target"]]
    return [row["workload"], row["unit"], fmt(row["flowkit"]), fmt(row["rq"]),
            ratio(row["ratio"]), fmt(row["loop"]), ratio(row["ratio_loop"]), row["better"],
            row["target"] or "-", meets]


def measured_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows some system has a figure for (``--only`` leaves the others empty)."""
    return [row for row in rows if any(row[name] is not None for name in ("flowkit", "rq", "loop"))]


def notes(machine: dict[str, Any]) -> list[str]:
    """Lines printed under the table: what n/a means here, and the proxy's proved delay."""
    return [f"RQ has no fleet row (flowkit and the loop only); n/a = not measured for that "
            f"system. Latency proxy: PING p50 {fmt(machine.get('proxy_round_trip_ms_p50'))} ms "
            f"through it vs {fmt(machine.get('redis_round_trip_ms_p50'))} ms direct."]


def print_table(console: Console, rows: list[dict[str, Any]], machine: dict[str, Any]) -> None:
    table = Table(title="flowkit vs RQ and vs a hand-rolled BRPOP/LPUSH loop that records "
                        "nothing (ratios = flowkit/baseline; see 'better' for direction)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col == "workload" else "right")
    colour = {"yes": "[green]yes[/]", "no": "[red]no[/]", "-": "-"}
    for row in measured_rows(rows):
        text = cells(row)
        table.add_row(*text[:-1], colour[text[-1]])
    console.print(table)
    for line in notes(machine):
        console.print(line)
