"""The benchmark suite: scripts that measure the project and write ``benchmarks/results/``.

    python -m benchmarks list            # every script, what it measures, its command and running time
    python -m benchmarks run quick       # the ML-100k headline (dvc repro, speed), then the report
    python -m benchmarks run full        # every seed, ID kind and dataset, then the report
    python -m benchmarks report          # regenerate headline.json, the README table and docs/results.md
    python -m benchmarks.NAME --help     # one script

Run from the project root with the project's environment (``.venv/bin/python``).
"""
