"""Reliability sweeps on the tiny project (8 items, 24 users, a 32-wide 1+1-layer backbone: the test
suite's configuration, so a whole `dvc repro` takes about a minute on 2 cores), each in a fresh DVC
repository under a temporary folder:

- kills: kill -9 at random moments of `dvc repro`, and just after a stage's start (ID generation,
  training, registration), just after DVC updates dvc.lock, and during `idgenrec registry add-items`;
  then `dvc repro` (or add-items) again: did it finish, and are the outputs the uninterrupted run's?
- corrupt: a truncated weights file, an ID table with a duplicate or a missing item, a damaged
  mlflow.db, an empty DVC cache entry: a one-line error naming the file, DVC flags the damage, and
  `dvc repro` restores the uninterrupted run's outputs;
- concurrency: a second `dvc repro` while one runs, two forced promotions at once (rounds);
- load: `idgenrec serve` on 127.0.0.1, N concurrent clients, a fixed number of requests each:
  latency percentiles, status counts, the server's resident memory; then fuzzed requests (hypothesis).

    python -m benchmarks.reliability                       # all sections, results into headline.json
    python -m benchmarks.reliability --only load --clients 50

Figures go to benchmarks/results/reliability.{json,md} and to `reliability` in headline.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from benchmarks.common import machine, output_path, write_report
from idgenrec.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEADLINE = ROOT / "benchmarks" / "results" / "headline.json"
OUT = ROOT / "benchmarks" / "results" / "reliability"
TARGET = "register"  # the model chain and the baselines it reads, not SASRec
COMPARED = ("prepare", "validate", "warmup", "ids", "train", "evaluate")  # register's record holds a run id

WORDS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
TINY_PARAMS = """\
data: {name: tiny, format: p5, path: data/tiny, k_core: 5, text_fields: [title, genres]}
evaluation: {ks: [5, 10]}
backbone: {profile: tiny, hidden_size: 32, encoder_layers: 1, decoder_layers: 1}
warmup: {epochs: 3, batch_size: 8, learning_rate: 0.003}
ids: {kind: learned, beam_groups: 4, batch_size: 8, max_input_tokens: 64, seed: 0}
training:
  history_length: 3
  batch_size: 16
  bf16: false
  num_beams: 4
  soft_id_max_tokens: 4
  schedule:
    - {phase: recommender, epochs: 2, learning_rate: 0.003}
    - {phase: ids, epochs: 0.5, learning_rate: 0.001}
    - {phase: recommender, epochs: 1, learning_rate: 0.001}
registry: {margin: 0.0}
sasrec: {max_epochs: 2, patience: 1}
runtime: {processes: 1}
"""
ENV = {
    **os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONHASHSEED": "0",
}
ENV.pop("IDGENREC_TRACKING_URI", None)
ENV.pop("MLFLOW_TRACKING_URI", None)


# -- the tiny project ----------------------------------------------------------------------------


def tiny_project(root: Path) -> Path:
    """The test suite's tiny P5 dataset and params in a DVC repository with this checkout's code."""
    data = root / "data" / "tiny"
    data.mkdir(parents=True)
    rng = random.Random(0)
    lines = []
    for user in range(24):
        start = rng.randrange(len(WORDS))
        lines.append(" ".join([f"u{user}", *(str((start + j) % len(WORDS) + 1) for j in range(rng.randint(6, 9)))]))
    (data / "user_sequence.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = "".join(f"{i + 1}\t{word}\tfood\n" for i, word in enumerate(WORDS))
    (data / "items.tsv").write_text("item_id\ttitle\tgenres\n" + rows, encoding="utf-8")
    (root / "params.yaml").write_text(TINY_PARAMS, encoding="utf-8")
    shutil.copytree(ROOT / "idgenrec", root / "idgenrec", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copyfile(ROOT / name, root / name)
    run(root, "dvc", "init", "--no-scm", "-q")
    return root


def run(root: Path, *command: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=root, env=ENV, capture_output=True, text=True, timeout=timeout)


def repro(root: Path, *args: str) -> subprocess.CompletedProcess:
    return run(root, "dvc", "repro", *args, TARGET)


def out_hashes(root: Path) -> dict[str, str]:
    """md5 of every output of the compared stages, as dvc.lock records them; a JSON metrics file's without its timings.

    Wall-clock fields (``seconds``, ``samples_per_second``, ...) differ between any two runs; every
    other byte of an output must not. (A model folder's timings file is outside its hash: .dvcignore.)
    """
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")) if (root / "dvc.lock").exists() else {}
    hashes = {}
    for stage in COMPARED:
        for out in lock.get("stages", {}).get(stage, {}).get("outs", []):
            path = root / out["path"]
            if path.suffix == ".json" and path.is_file():
                content = json.dumps(without_timings(json.loads(path.read_text(encoding="utf-8"))), sort_keys=True)
                hashes[out["path"]] = hashlib.md5(content.encode()).hexdigest()
            else:
                hashes[out["path"]] = out["md5"]
    return hashes


def without_timings(value):
    """``value`` with every wall-clock field (a key naming seconds) left out, at any depth."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "second" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def champion_consistent(root: Path) -> bool:
    """`registry list` answers, and exactly one version carries `champion`."""
    result = run(root, "idgenrec", "registry", "list")
    rows = [line.split() for line in result.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    return result.returncode == 0 and sum("champion" in row[1].split(",") for row in rows if len(row) > 1) == 1


def one_line_error(result: subprocess.CompletedProcess, names: str) -> bool:
    """Exit 1, an `error:` line naming ``names``, no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.returncode == 1 and len(errors) == 1 and names in errors[0] and "Traceback" not in result.stderr


# -- kill -9 --------------------------------------------------------------------------------------


class Watched:
    """A command in its own process group whose output lines are watched for a pattern."""

    def __init__(self, root: Path, *command: str):
        self.process = subprocess.Popen(command, cwd=root, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True, start_new_session=True)
        self.lines: list[str] = []
        self.stage = "start"
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if found := re.search(r"Running stage '([\w-]+)'", line):
                self.stage = found.group(1)
            elif "Updating lock file" in line:
                self.stage = f"{self.stage} (dvc.lock update)"

    def wait_for(self, pattern: str, timeout: float = 900) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            if any(pattern in line for line in self.lines):
                return True
            time.sleep(0.02)
        return False

    def kill(self) -> str:
        """kill -9 the whole group; what it was doing."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return self.stage if self.process.returncode == -signal.SIGKILL else "finished before the kill"


def kill_sweep(work: Path, random_kills: int, seed: int) -> dict:
    reference = tiny_project(work / "reference")
    started = time.monotonic()
    assert repro(reference).returncode == 0, "the uninterrupted run failed"
    duration = time.monotonic() - started
    expected = out_hashes(reference)
    rng = random.Random(seed)
    plans = [("random", None)] * random_kills + [
        ("stage", "Running stage 'ids'"), ("stage", "Running stage 'train'"), ("stage", "Running stage 'register'"),
        ("lock", "Updating lock file"),
    ]
    trials = []
    for number, (kind, pattern) in enumerate(plans):
        project = tiny_project(work / f"kill-{number}")
        watched = Watched(project, "dvc", "repro", TARGET)
        if kind == "random":
            time.sleep(rng.uniform(0.05, 0.95) * duration)
        else:
            watched.wait_for(pattern)
            time.sleep(rng.uniform(0.0, 1.5) if kind == "stage" else 0.0)
        during = watched.kill()
        resumed = repro(project)
        trials.append({
            "kill": kind, "during": during, "recovered": resumed.returncode == 0,
            "identical": out_hashes(project) == expected, "registry_consistent": champion_consistent(project),
            "error": resumed.stderr.strip().splitlines()[-1] if resumed.returncode else None,
        })
        print(json.dumps(trials[-1]), flush=True)
    trials += add_items_kills(reference, work, rng)
    killed = [t for t in trials if t["during"] != "finished before the kill"]
    return {
        "setting": "tiny project (8 items, 24 users, 32-wide 1+1-layer backbone), `dvc repro register` "
                   f"uninterrupted in {duration:.0f} s",
        "kills_tried": len(killed), "runs_recovered": sum(t["recovered"] for t in killed),
        # add-items kills are checked for recovery and a consistent registry: their outputs are not compared
        "results_compared": sum(t["identical"] is not None for t in killed),
        "results_identical": sum(bool(t["identical"]) for t in killed),
        "registry_consistent": sum(t["registry_consistent"] for t in killed), "trials": trials,
    }


def add_items_kills(reference: Path, work: Path, rng: random.Random, tries: int = 2) -> list[dict]:
    """kill -9 during `idgenrec registry add-items`, then the same command again."""
    trials = []
    for number in range(tries):
        project = work / f"add-items-{number}"
        shutil.copytree(reference, project, symlinks=True)
        (project / "new.tsv").write_text("item_id\ttitle\ttext\n9\tmango lassi\tmango lassi drink\n", encoding="utf-8")
        watched = Watched(project, "idgenrec", "registry", "add-items", "--items", "new.tsv")
        time.sleep(rng.uniform(2.0, 12.0))
        watched.stage = "add-items"
        during = watched.kill()
        again = run(project, "idgenrec", "registry", "add-items", "--items", "new.tsv")
        trials.append({
            "kill": "add-items", "during": during, "recovered": again.returncode in (0, 2),
            "identical": None, "registry_consistent": champion_consistent(project),
        })
        print(json.dumps(trials[-1]), flush=True)
    return trials


# -- corrupt artifacts ----------------------------------------------------------------------------


def corrupt(work: Path, reference: Path) -> dict:
    project = work / "corrupt"
    shutil.copytree(reference, project, symlinks=True)
    expected = out_hashes(project)
    checks = {}

    weights = project / "artifacts/model/best/recommender/model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    checks["truncated weights"] = one_line_error(
        run(project, "idgenrec", "evaluate", "--output", str(work / "x.json")), "recommender/model.safetensors")

    table = project / "artifacts/ids/item_ids.tsv"
    intact = table.read_text(encoding="utf-8")
    lines = intact.splitlines(keepends=True)
    table.write_text(intact + lines[1], encoding="utf-8")
    checks["ID table, duplicate item"] = one_line_error(run(project, "idgenrec", "train"), "item_ids.tsv")
    table.write_text("".join(lines[:-1]), encoding="utf-8")
    checks["ID table, missing item"] = one_line_error(run(project, "idgenrec", "train"), "item_ids.tsv")

    store = project / "mlruns/mlflow.db"
    backup = store.read_bytes()
    store.write_bytes(backup[: len(backup) // 3])
    checks["damaged mlflow.db"] = one_line_error(run(project, "idgenrec", "registry", "list"), "mlflow.db")
    store.write_bytes(backup)

    # An empty DVC cache entry: DVC's checkout copies it silently; `dvc status` and `dvc repro` see it.
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    prepared_md5 = next(o["md5"] for o in lock["stages"]["prepare"]["outs"])
    manifest = project / ".dvc/cache/files/md5" / prepared_md5[:2] / prepared_md5[2:]
    entry = json.loads(manifest.read_text())[0]["md5"]
    cached = project / ".dvc/cache/files/md5" / entry[:2] / entry[2:]
    cached.chmod(0o644)
    cached.write_bytes(b"")
    shutil.rmtree(project / "artifacts/prepared")
    run(project, "dvc", "checkout", "prepare")
    empty_file_checked_out = any(p.stat().st_size == 0 for p in (project / "artifacts/prepared").iterdir())
    status = run(project, "dvc", "status", "--json")
    checks["empty DVC cache entry flagged by dvc status"] = status.returncode == 0 and json.loads(status.stdout or "{}") != {}
    checks["damaged prepared file refused by the next stage"] = one_line_error(run(project, "idgenrec", "ids", "show", "1"), "artifacts/prepared")

    restored = repro(project)
    return {
        "checks": checks, "named_errors": sum(checks.values()), "kinds": len(checks),
        "dvc_checkout_copied_the_empty_entry": empty_file_checked_out,
        "dvc_repro_restored": restored.returncode == 0, "restored_identical": out_hashes(project) == expected,
    }


# -- concurrency -------------------------------------------------------------------------------


def concurrency(work: Path, reference: Path, rounds: int) -> dict:
    project = work / "concurrent"
    shutil.copytree(reference, project, symlinks=True)
    first = Watched(project, "dvc", "repro", "--force", "ids")
    first.wait_for("Running stage")
    second = repro(project)
    first.process.wait()
    second_refused = second.returncode != 0 and "lock" in (second.stderr + second.stdout).lower()
    after = run(project, "dvc", "status", "ids", "--json")

    # Two more versions of the same model, then forced promotions of both at once, `rounds` times.
    for _ in range(2):
        run(project, "idgenrec", "registry", "log-model", "--model", "artifacts/model/best", "--no-promote")
    consistent = 0
    for _ in range(rounds):
        run(project, "idgenrec", "registry", "promote", "--version", "1", "--force")
        racers = [subprocess.Popen(["idgenrec", "registry", "promote", "--version", v, "--force"], cwd=project, env=ENV,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in ("2", "3")]
        codes = [r.wait() for r in racers]
        champion, previous = registry_state(project)
        other = {"2": "3", "3": "2"}.get(champion)
        consistent += codes == [0, 0] and previous == other  # the later promotion replaced the earlier one
    return {
        "second_dvc_repro_refused": second_refused, "first_dvc_repro_finished": first.process.returncode == 0,
        "dvc_status_clean_after": after.returncode == 0 and json.loads(after.stdout or "{}") == {},
        "promotion_rounds": rounds, "promotion_rounds_consistent": consistent,
    }


def registry_state(project: Path) -> tuple[str | None, str | None]:
    code = ("import mlflow; from mlflow import MlflowClient; from idgenrec.tracking import configure_tracking;"
            "configure_tracking('.'); v = MlflowClient().get_model_version_by_alias('idgenrec-tiny', 'champion');"
            "print(v.version, v.tags.get('previous_champion'))")
    out = run(project, sys.executable, "-c", code).stdout.split()
    return (out[0], out[1]) if len(out) == 2 else (None, None)


# -- serving under load ---------------------------------------------------------------------------


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, float]:
    start = time.perf_counter()
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError:
        status = 0  # connection refused or reset: counted apart from HTTP answers
    return status, time.perf_counter() - start


def load(work: Path, reference: Path, clients: int, requests_each: int, fuzz_examples: int) -> dict:
    port = free_port()
    server = subprocess.Popen(["idgenrec", "serve", "--port", str(port)], cwd=reference, env=ENV,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.5)
        items = [str(i) for i in range(1, len(WORDS) + 1)]
        rng = random.Random(0)
        bodies = [json.dumps({"dataframe_records": [{"history": rng.sample(items, rng.randint(1, 6)), "k": 5}]}).encode()
                  for _ in range(clients * requests_each)]
        for body in bodies[:10]:
            post(url, body)  # warm-up
        memory = [rss_mb(server.pid)]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                memory.append(rss_mb(server.pid))

        threading.Thread(target=sample, daemon=True).start()
        started = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            answers = list(pool.map(lambda body: post(url, body), bodies))
        seconds = time.monotonic() - started
        sampling.set()
        latencies = sorted(t for _, t in answers)
        statuses = [s for s, _ in answers]
        fuzz = fuzz_requests(url, fuzz_examples)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

    return {
        "clients": clients, "requests": len(bodies), "seconds": round(seconds, 1),
        "requests_per_s": round(len(bodies) / seconds, 2),
        "latency_ms": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(latencies[-1] * 1000, 1)},
        "status_counts": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "server_errors": sum(s >= 500 or s == 0 for s in statuses),
        "rss_mb": {"start": round(memory[0], 1), "peak": round(max(memory), 1), "end": round(memory[-1], 1)},
        "fuzz": fuzz,
    }


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fuzz_requests(url: str, examples: int) -> dict:
    """Random JSON, random bytes and mutated valid requests (hypothesis): every answer 200 or 4xx?"""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=12),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12,
    )
    item = st.sampled_from([str(i) for i in range(1, 9)]) | st.text(max_size=6) | st.integers(-5, 20)
    record = st.fixed_dictionaries({"history": st.lists(item, max_size=5) | values},
                                   optional={"k": st.integers(-3, 120) | values})
    payload = st.fixed_dictionaries({"dataframe_records": st.lists(record, max_size=3)}, optional={"params": values})
    bodies = payload.map(lambda p: json.dumps(p).encode()) | values.map(lambda p: json.dumps(p).encode()) | st.binary(max_size=200)
    counts: dict[str, int] = {}

    @settings(max_examples=examples, deadline=None, database=None)
    @given(bodies, st.sampled_from(["application/json", "text/csv", "application/json; charset=latin-1"]))
    def send(body: bytes, content_type: str) -> None:
        status, _ = post(url, body, content_type)
        key = "5xx" if status >= 500 or status == 0 else "4xx" if status >= 400 else str(status)
        counts[key] = counts.get(key, 0) + 1

    send()
    return {"requests": sum(counts.values()), "answers": counts}


# -- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=["kills", "corrupt", "concurrency", "load"], default=None)
    parser.add_argument("--random-kills", type=int, default=4, help="kills at random moments (plus 4 aimed ones and 2 in add-items)")
    parser.add_argument("--promotion-rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests-each", type=int, default=4)
    parser.add_argument("--fuzz-examples", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    wanted = set(args.only or ["kills", "corrupt", "concurrency", "load"])
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="idgenrec-reliability-") as folder:
        work = Path(folder)
        if "kills" in wanted:
            results["kills"] = kill_sweep(work, args.random_kills, args.seed)
            reference = work / "reference"
        else:
            reference = tiny_project(work / "reference")
            assert repro(reference).returncode == 0, "the reference run failed"
        if "corrupt" in wanted:
            results["corrupt"] = corrupt(work, reference)
        if "concurrency" in wanted:
            results["concurrency"] = concurrency(work, reference, args.promotion_rounds)
        if "load" in wanted:
            results["load"] = load(work, reference, args.clients, args.requests_each, args.fuzz_examples)
    last = output_path(args.out, ".json")
    previous = json.loads(last.read_text()).get("results", {}) if last.exists() else {}
    results = {**previous, **results}  # a section run alone keeps the others' last figures
    write_report(args.out, {"results": results}, render(results))
    headline = json.loads(HEADLINE.read_text(encoding="utf-8")) if HEADLINE.exists() else {}
    headline["reliability"] = {**summary(results), "machine": machine(), "command": "python -m benchmarks.reliability"}
    write_json(HEADLINE, headline)


def summary(results: dict) -> dict:
    out = {}
    if kills := results.get("kills"):
        out["kills"] = {k: kills[k] for k in ("setting", "kills_tried", "runs_recovered", "results_compared", "results_identical", "registry_consistent")}
    if corrupted := results.get("corrupt"):
        out["corrupt"] = {k: corrupted[k] for k in ("kinds", "named_errors", "dvc_repro_restored", "restored_identical")}
    if concurrent := results.get("concurrency"):
        out["concurrency"] = concurrent
    if served := results.get("load"):
        out["load"] = {k: served[k] for k in ("clients", "requests", "requests_per_s", "latency_ms", "server_errors", "rss_mb")}
        out["load"]["fuzz"] = served["fuzz"]
    return out


def render(results: dict) -> str:
    lines = ["# Reliability", "", "`python -m benchmarks.reliability` (tiny project; see the module docstring).", ""]
    for section, figures in results.items():
        lines += [f"## {section}", "", "```json", json.dumps(figures, indent=2), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
