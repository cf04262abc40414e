"""Regenerate the README's performance table from bench-results.json (``make bench`` runs it).

Renders the rows run_bench.py wrote, with the same cells as the terminal table (report.cells),
as Markdown, plus the machine line (cores, CPU, server version, PING round trip direct and
through the latency proxy), and replaces what lies between the markers in README.md:

    <!-- bench-table:start -->  ...  <!-- bench-table:end -->

and the big-map tables from big-maps.json (``make bench``, 100,000 tasks) and
big-maps-1m.json (``make bench-big``, 1,000,000) between ``<!-- big-maps:... -->`` and
``<!-- big-maps-1m:... -->`` markers.

so the README shows the last measured run, never numbers typed in by hand.

    .venv/bin/python tests/benchmarks/readme_table.py [bench-results.json] [README.md]
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import COLUMNS, cells, fmt, measured_rows, notes  # noqa: E402

START, END = "<!-- bench-table:start -->", "<!-- bench-table:end -->"
BIG_START, BIG_END = "<!-- big-maps:start -->", "<!-- big-maps:end -->"
#: big_maps.py's figures, as README columns.
BIG_COLUMNS = (("size", "map size", "{:,.0f}"), ("keep", "keep", "{}"),
               ("map_return_s", "map() returns (s)", "{:.2f}"),
               ("all_queued_s", "all queued (s)", "{:.1f}"), ("total_s", "all done (s)", "{:.1f}"),
               ("rss_per_future_b", "driver B / pending future", "{:.0f}"),
               ("peak_rss_mb", "driver peak RSS (MB)", "{:.0f}"),
               ("redis_peak_mb", "Redis peak (MB)", "{:.0f}"),
               ("redis_b_per_run", "Redis B / finished run", "{:.0f}"))
ROOT = Path(__file__).resolve().parents[2]


def machine_line(machine: dict[str, Any], when: str) -> str:
    return (f"Measured {when} on {machine.get('cpus_usable')} cores "
            f"({machine.get('cpu_model')}), Python {machine.get('python')}, server "
            f"{Path(str(machine.get('server_binary'))).name} {machine.get('server_version')}, "
            f"PING round trip p50 {fmt(machine.get('redis_round_trip_ms_p50'))} ms "
            f"(through the latency proxy {fmt(machine.get('proxy_round_trip_ms_p50'))} ms), "
            f"load average {machine.get('loadavg_start')} at the start.")


def render(results: dict[str, Any], when: str) -> str:
    """The Markdown between the markers: machine line, table, notes, errors if any."""
    lines = [machine_line(results["machine"], when), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in measured_rows(results["results"]):
        text = [cell.replace("|", "\\|") for cell in cells(row)]
        lines.append("| " + " | ".join(text) + " |")
    lines += ["", *notes(results["machine"])]
    if results.get("errors"):
        lines += ["", "Errors in this run (its figures are incomplete):", "",
                  *(f"- {err}" for err in results["errors"])]
    return "\n".join(lines)


def render_big_maps(report: dict[str, Any], when: str) -> str:
    """The big-map rows (tests/benchmarks/big_maps.py) as a Markdown table."""
    machine = report.get("machine", {})
    lines = [f"Big maps from one driver, 2 executors on the same {machine.get('nproc')} cores "
             f"(`tests/benchmarks/big_maps.py`, {when}, load average "
             f"{machine.get('loadavg_start')} at the start):", "",
             "| " + " | ".join(title for _, title, _ in BIG_COLUMNS) + " |",
             "|" + " --- |" * len(BIG_COLUMNS)]
    for row in report["results"]:
        lines.append("| " + " | ".join(form.format(row[key]) for key, _, form in BIG_COLUMNS)
                     + " |")
    return "\n".join(lines)


def replace_section(readme: str, body: str, start_marker: str = START,
                    end_marker: str = END) -> str:
    """``readme`` with the text between the markers replaced; ValueError without markers."""
    head, start, rest = readme.partition(start_marker)
    _, end, tail = rest.partition(end_marker)
    if not start or not end:
        raise ValueError(f"README has no {start_marker} ... {end_marker} section")
    return f"{head}{start_marker}\n{body}\n{end_marker}{tail}"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT / "bench-results.json"
    readme = Path(argv[1]) if len(argv) > 1 else ROOT / "README.md"
    results = json.loads(source.read_text())
    when = datetime.datetime.fromtimestamp(source.stat().st_mtime, datetime.UTC)
    text = replace_section(readme.read_text(), render(results, when.strftime("%Y-%m-%d")))
    print(f"updated the performance table in {readme} from {source}")
    for big in sorted(source.parent.glob("big-maps*.json")):  # make bench, make bench-big
        report = json.loads(big.read_text())
        day = datetime.datetime.fromtimestamp(big.stat().st_mtime, datetime.UTC)
        marker = big.stem  # big-maps, big-maps-1m
        text = replace_section(text, render_big_maps(report, day.strftime("%Y-%m-%d")),
                               f"<!-- {marker}:start -->", f"<!-- {marker}:end -->")
        print(f"updated the {marker} table in {readme} from {big}")
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
