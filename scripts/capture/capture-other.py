#!/usr/bin/env python3
"""Capture real errors of Node, Java, Go and Ruby workers into tests/data/exceptions-other.jsonl.

    scripts/capture/capture-other.py                 every runtime found on this machine
    scripts/capture/capture-other.py --only node go  just these; the other rows are kept

Each generator provokes errors for real and prints one row a line, {"case", "expected",
"acceptable"?, "exception"}, where `exception` is the wire object a worker in that language
sends (docs/workers.md) and `expected` the failure type we judge right (`acceptable`: other
answers that are not wrong, e.g. EXTERNAL_API_DOWN for a database that refuses connections).
This script adds the runtime and its version to each row and rewrites the file; the file is
committed and tests/test_taxonomy_languages.py checks the default taxonomy against it.

Setup (Debian 12): Node 20 + npm (`npm ci` in scripts/capture), Java 17 with
`apt-get install libpostgresql-jdbc-java libhsqldb-java`, and
`apt-get install golang-go golang-github-lib-pq-dev ruby ruby-pg ruby-redis ruby-activerecord`.
PostgreSQL must accept the superuser on 127.0.0.1:5432 without a password (override with
CAPTURE_PG_URL / CAPTURE_PG_DSN), and `redis-server` must be on PATH.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "tests" / "data" / "exceptions-other.jsonl"
JARS = ["/usr/share/java/postgresql.jar", "/usr/share/java/hsqldb.jar"]


def version(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def node(tmp: Path) -> tuple[str, list[str]]:
    if not (HERE / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True)
    return f"node {version(['node', '--version'])}", ["node", str(HERE / "node.js")]


def java(tmp: Path) -> tuple[str, list[str]]:
    classes = tmp / "java"
    classpath = ":".join([str(classes), *JARS])
    subprocess.run(
        ["javac", "-d", str(classes), "-cp", classpath, str(HERE / "Capture.java")], check=True
    )
    # A small heap, so OutOfMemoryError comes quickly.
    return version(["java", "-version"]), ["java", "-Xmx64m", "-cp", classpath, "Capture"]


def go(tmp: Path) -> tuple[str, list[str]]:
    binary = tmp / "capture-go"
    env = {
        **os.environ,
        "GOPATH": "/usr/share/gocode",  # Debian's packaged Go libraries (lib/pq)
        "GO111MODULE": "off",
        "GOFLAGS": "-mod=mod",
        "GOCACHE": str(tmp / "gocache"),
    }
    subprocess.run(
        ["go", "build", "-o", str(binary), str(HERE / "capture.go")], check=True, env=env
    )
    return version(["go", "version"]), [str(binary)]


def ruby(tmp: Path) -> tuple[str, list[str]]:
    return version(["ruby", "--version"]), ["ruby", str(HERE / "capture.rb")]


RUNTIMES: dict[str, tuple[str, Callable[[Path], tuple[str, list[str]]]]] = {
    "node": ("node", node),
    "java": ("javac", java),
    "go": ("go", go),
    "ruby": ("ruby", ruby),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(RUNTIMES))
    args = parser.parse_args()
    wanted = args.only or [name for name, (tool, _) in RUNTIMES.items() if shutil.which(tool)]
    kept = []
    if OUT.exists():
        kept = [
            json.loads(line)
            for line in OUT.read_text(encoding="utf-8").splitlines()
            if line and json.loads(line)["language"] not in wanted
        ]
    rows = []
    with tempfile.TemporaryDirectory(prefix="capture-other-") as tmp:
        for name in wanted:
            runtime, command = RUNTIMES[name][1](Path(tmp))
            done = subprocess.run(command, capture_output=True, text=True, cwd=HERE)
            sys.stderr.write(done.stderr)
            if done.returncode != 0:
                print(f"{name}: the generator failed (exit {done.returncode})", file=sys.stderr)
                return 1
            for line in done.stdout.splitlines():
                row = json.loads(line)
                assert row["exception"]["language"] == name, row
                rows.append({"language": name, "runtime": runtime, **row})
            print(f"{runtime}: {sum(r['language'] == name for r in rows)} rows", file=sys.stderr)
    order = list(RUNTIMES)
    everything = sorted(kept + rows, key=lambda r: order.index(r["language"]))
    cases = [(r["language"], r["case"]) for r in everything]
    assert len(cases) == len(set(cases)), "duplicate cases"
    with OUT.open("w", encoding="utf-8") as out:
        for row in everything:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(everything)} rows written to {OUT.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
