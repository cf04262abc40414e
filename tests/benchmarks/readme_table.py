"""Regenerate the README's performance table from bench-results.json (``make bench`` runs it).

Renders the rows run_bench.py wrote, with the same cells as the terminal table (report.cells),
as Markdown, plus the machine line (cores, CPU, server version, PING round trip direct and
through the latency proxy), and replaces what lies between the markers in README.md:

    <!-- bench-table:start -->  ...  <!-- bench-table:end -->

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


def replace_section(readme: str, body: str) -> str:
    """``readme`` with the text between the markers replaced; ValueError without markers."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README has no {START} ... {END} section")
    return f"{head}{START}\n{body}\n{END}{tail}"


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else ROOT / "bench-results.json"
    readme = Path(argv[1]) if len(argv) > 1 else ROOT / "README.md"
    results = json.loads(source.read_text())
    when = datetime.datetime.fromtimestamp(source.stat().st_mtime, datetime.UTC)
    readme.write_text(replace_section(readme.read_text(),
                                      render(results, when.strftime("%Y-%m-%d"))))
    print(f"updated the performance table in {readme} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
