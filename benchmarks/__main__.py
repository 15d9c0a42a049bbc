"""``python -m benchmarks``: list the suite, run a set of it, or regenerate the results tables.

    python -m benchmarks list
    python -m benchmarks run quick [--dry-run]
    python -m benchmarks run full [--only NAME ...] [--dry-run]
    python -m benchmarks report
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import SCRIPTS, SUITES


def unregistered() -> list[str]:
    """Modules of the package that no SCRIPTS entry names (listed, so a new script is seen before it is added)."""
    names = {entry.name for entry in SCRIPTS} | {"common", "report", "__init__", "__main__"}
    return sorted(path.stem for path in Path(__file__).parent.glob("*.py") if path.stem not in names)


def list_scripts() -> None:
    for entry in SCRIPTS:
        suites = ", ".join(entry.suites) or "by hand" + (f" (needs {entry.needs})" if entry.needs else "")
        print(f"{entry.name}  [{suites}; {entry.running_time}]\n    {entry.measures}")
        for command in entry.commands:
            print("    $ " + shlex.join(entry.argv(command)).replace(sys.executable, "python"))
    for name in unregistered():
        print(f"{name}  [not in SCRIPTS yet: add a Benchmark entry in benchmarks/common.py]\n"
              f"    $ python -m benchmarks.{name} --help")


def run(suite: str, only: list[str], dry_run: bool) -> None:
    chosen = [entry for entry in SCRIPTS if suite in entry.suites and (not only or entry.name in only)]
    commands = [entry.argv(command) for entry in chosen for command in entry.commands]
    commands.append([sys.executable, "-m", "benchmarks.report"])
    for argv in commands:
        print("$ " + shlex.join(argv), flush=True)
        if dry_run:
            continue
        started = time.perf_counter()
        subprocess.run(argv, check=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="Every script: what it measures, its command, its running time.")
    runner = commands.add_parser("run", help="Run a set of the suite, then the report.")
    runner.add_argument("suite", choices=sorted(SUITES), help="; ".join(f"{k}: {v}" for k, v in SUITES.items()))
    runner.add_argument("--only", nargs="+", default=[], metavar="NAME", help="Only these scripts of the set.")
    runner.add_argument("--dry-run", action="store_true", help="Print the commands, run nothing.")
    commands.add_parser("report", help="Regenerate headline.json, the README table and docs/results.md.")
    args = parser.parse_args(argv)
    if args.command == "list":
        list_scripts()
    elif args.command == "run":
        run(args.suite, args.only, args.dry_run)
    else:
        from benchmarks import report

        report.main()


if __name__ == "__main__":
    main()
