"""Export throughput and memory against the floor of reading the same files, measured in one run.

    python bench/export_bench.py --mb 200

Generates N MB of OpenClaw JSONL session files (the sample agent's kinds of conversation, 1 to 15 of them a session as
in OpenClaw's long-lived sessions, each made unique so deduplication does not flatter the figures), then runs, each in its own process so peak RSS is its own:
  floor:    read every line and json.loads it (the least any exporter must do);
  clawtune: `clawtune agent export-training-data` on the same folder (scrubbing on, defaults otherwise).
Prints MB/s, peak RSS and their ratios. Goals: >= 30 MB/s on one core, within 3x of the floor, peak RSS < 300 MB on 1 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

FLOOR = """
import json, sys, pathlib
n = 0
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl")):
    with open(path, "rb") as fh:
        for line in fh:
            if line.strip():
                json.loads(line)
                n += 1
print(n)
"""

CLAWTUNE = """
import sys
from pathlib import Path
from clawtune.data.build import TrainingDataOptions, export_training_data
report = export_training_data(
    TrainingDataOptions(agent_id="bench-agent", output=Path(sys.argv[2]), sessions=[Path(sys.argv[1])], force=True)
)
assert "torch" not in sys.modules, "the export path must not import torch"
print(report["examples_written"])
"""


def generate(folder: Path, megabytes: float) -> int:
    """Write JSONL v3 session files until they add up to `megabytes`; returns the bytes written.

    Each session holds 1 to 15 of the sample agent's conversations one after another, as OpenClaw's long-lived
    sessions (`agent:main:main`) do, with a unique ticket number so none is a duplicate.
    """
    import random
    import uuid
    from datetime import UTC, datetime, timedelta

    from clawtune.sample.agent import KINDS, SessionBuilder, _jsonl, script

    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    names, weights = zip(*KINDS, strict=True)
    target = int(megabytes * 1024 * 1024)
    written, n = 0, 0
    start = datetime(2026, 4, 1, tzinfo=UTC)
    while written < target:
        session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        b = SessionBuilder(
            random.Random(n), start + timedelta(minutes=n), 3, session_id, "cli", "agent:bench-agent:main"
        )
        for turn in range(rng.randint(1, 15)):
            script(rng.choices(names, weights)[0], b)
            b.user(f"Noted, ticket #{n}-{turn}.")
            b.assistant(f"Logged under ticket #{n}-{turn}.")
        data = _jsonl(b)
        (folder / f"{session_id}.jsonl").write_bytes(data)
        written += len(data)
        n += 1
    return written


MEASURED = """
import resource, runpy, sys, time
code = sys.argv.pop(1)
start = time.perf_counter()
exec(compile(code, "<bench>", "exec"))
print("BENCH", time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def measure(code: str, *args: str) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, first output line) of a fresh Python process running `code`.

    Time and peak RSS are taken inside that process, so start-up and the other runs do not count.
    """
    proc = subprocess.run([sys.executable, "-c", MEASURED, code, *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    lines = proc.stdout.strip().splitlines()
    _, seconds, rss = lines[-1].split()
    return float(seconds), float(rss), lines[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=200, help="size of the generated logs in MB")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best time of each side counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "sessions"
        size = (
            generate(folder, args.mb)
            if not any(folder.glob("*.jsonl"))
            else sum(p.stat().st_size for p in folder.glob("*.jsonl"))
        )
        mb = size / 1024 / 1024
        # Interleaved rounds, best time of each: this machine's speed drifts by 2x between minutes.
        floor_runs, ours_runs = [], []
        for _ in range(args.rounds):
            floor_runs.append(measure(FLOOR, str(folder)))
            ours_runs.append(measure(CLAWTUNE, str(folder), str(Path(tmp) / "out")))
        floor_s, lines = min(r[0] for r in floor_runs), floor_runs[0][2]
        ours_s, examples = min(r[0] for r in ours_runs), ours_runs[0][2]
        floor_rss, ours_rss = max(r[1] for r in floor_runs), max(r[1] for r in ours_runs)
        rows = {
            "input_mb": round(mb, 1),
            "sessions": len(list(folder.glob("*.jsonl"))),
            "lines": int(lines),
            "examples": int(examples),
            "floor_mb_s": round(mb / floor_s, 1),
            "clawtune_mb_s": round(mb / ours_s, 1),
            "slowdown_vs_floor": round(ours_s / floor_s, 2),
            "floor_peak_rss_mb": round(floor_rss),
            "clawtune_peak_rss_mb": round(ours_rss),
            "cpu_count": os.cpu_count(),
        }
        width = max(len(k) for k in rows)
        for key, value in rows.items():
            print(f"{key:<{width}}  {value}")
        print(json.dumps(rows))
        goals = [
            ("clawtune >= 30 MB/s", rows["clawtune_mb_s"] >= 30),
            ("within 3x of the floor", rows["slowdown_vs_floor"] <= 3),
            ("peak RSS < 300 MB", rows["clawtune_peak_rss_mb"] < 300),
        ]
        for name, ok in goals:
            print(f"{'PASS' if ok else 'MISS'}  {name}")


if __name__ == "__main__":
    main()
