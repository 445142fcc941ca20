"""Run the whole benchmark suite, print every table, and write
bench/RESULTS.md: the machine's facts, each figure next to its same-run
baseline, each target met or not, and for a missed target the top of a
profile of the server while it missed it.

RESULTS.md keeps the two latest runs: the new one first, then the one before.

Usage: python -m bench.run [--quick|--full] [--results PATH]
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Callable

from bus.embedded_postgres import find_bindir

from . import db_load, fanout, latency, mail_throughput, scaleout, workers, write_throughput, ws_fanout
from .report import Section

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RUN_MARKER = "<!-- run -->"
HEADER = """# imbus benchmark results

Produced by `scripts/bench` (quick: N <= 1,000, 2,000 on one port, under 2 minutes) or
`scripts/bench --full`, which run `python -m bench.run`. Every figure is set
against a baseline measured in the same run on the same machine; the raw
tables are printed by each script under bench/ (run one alone with
`python -m bench.NAME --help`). The two latest runs are kept, newest first.
"""


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def machine_facts() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    postgres = subprocess.run([str(find_bindir() / "postgres"), "--version"], capture_output=True,
                              text=True).stdout.strip()
    load = os.getloadavg()
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"CPU: {cpu}, {os.cpu_count()} cores (nproc)",
        f"RAM: {mem_kib / 1024 / 1024:.1f} GiB",
        f"kernel: {platform.release()}; somaxconn {_read('/proc/sys/net/core/somaxconn').strip()}; "
        f"ephemeral ports {_read('/proc/sys/net/ipv4/ip_local_port_range').split()}; "
        f"open files limit {resource.getrlimit(resource.RLIMIT_NOFILE)}",
        f"Python {platform.python_version()}; {postgres}; gevent {version('gevent')}; "
        f"psycopg2 {version('psycopg2-binary')}; werkzeug {version('werkzeug')}; uvloop {version('uvloop')}",
        f"load average at start (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]


def benchmarks(quick: bool) -> list[tuple[str, Callable[[], Section]]]:
    suite = [
        ("Write throughput", lambda: write_throughput.measure(quick=quick)),
        ("Fan-out and memory", lambda: fanout.measure(quick=quick)),
        ("WebSocket fan-out", lambda: ws_fanout.measure(quick=quick)),
        ("Workers on one port", lambda: workers.measure(quick=quick)),
        ("The chat at bus speed", lambda: mail_throughput.measure(quick=quick)),
        ("Latency", lambda: latency.measure(quick=quick)),
        ("Database load", lambda: db_load.measure(quick=quick)),
    ]
    if not quick:
        suite.append(("Scale-out", lambda: scaleout.measure()))
    return suite


def render(mode: str, facts: list[str], sections: list[Section], seconds: float) -> str:
    load = os.getloadavg()
    lines = [RUN_MARKER, f"## Run of {facts[0].split(': ', 1)[1]} ({mode} mode, {seconds:.0f} s)", ""]
    lines += [f"- {fact}" for fact in facts]
    lines += [f"- load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work on the "
              "same cores during the run shows up here and makes the figures noisier)", ""]
    targets = [target for section in sections for target in section.targets]
    lines += ["### Targets", "", "| target | measured | goal | status |", "| --- | --- | --- | --- |"]
    lines += [target.markdown() for target in targets] + [""]
    for section in sections:
        lines += [f"### {section.name}", ""]
        lines += [table.markdown() for table in section.tables]
        lines += [f"- {note}" for note in section.notes]
        for target in section.targets:
            if target.profile:
                lines += ["", f"Profile of the server for \"{target.name}\" "
                          "(py-spy samples, busy time only):", "", "```", target.profile, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_results(path: Path, run: str, *, replace_latest: bool = False) -> None:
    """Put ``run`` first and keep the latest earlier run after it
    (``replace_latest``: ``run`` is a newer state of the first run there)."""
    runs = path.read_text().split(RUN_MARKER)[1:] if path.exists() else []
    earlier = runs[1:2] if replace_latest else runs[:1]
    path.write_text(HEADER + "\n" + run + "".join("\n" + RUN_MARKER + text for text in earlier))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="every size, and the scale-out benchmark")
    parser.add_argument("--quick", action="store_true", help="the default: N <= 1,000")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    quick = not args.full
    facts = machine_facts()
    print("\n".join(facts), flush=True)
    started = time.monotonic()
    sections, failed = [], 0
    for name, measure in benchmarks(quick):
        print(f"\n#### {name}", flush=True)
        try:
            section = measure()
        except Exception:
            failed += 1
            section = Section(name, notes=["the benchmark failed:\n\n```\n" + traceback.format_exc() + "```"])
            traceback.print_exc()
        section.print()
        sections.append(section)
        # After every benchmark, so an interrupted run keeps what it measured.
        write_results(args.results, render("quick" if quick else "full", facts, sections, time.monotonic() - started),
                      replace_latest=len(sections) > 1)
    print(f"\nwrote {args.results}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
