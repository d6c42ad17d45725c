"""python -m grafana.dashboards [--check]"""

from __future__ import annotations

import argparse
import sys

from . import OUTPUT_DIR, SKELETONS, render_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboards", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    rendered = render_all()
    existing = set(OUTPUT_DIR.glob("*.json")) | set(SKELETONS.glob("task-sidecar-*.json"))
    if args.check:
        stale = [p for p, text in rendered.items() if not p.exists() or p.read_text() != text]
        stale += sorted(existing - set(rendered))
        for path in stale:
            print(f"{path} is out of date: run `make dashboards`", file=sys.stderr)
        return 1 if stale else 0
    for path in sorted(existing - set(rendered)):
        path.unlink()  # a dashboard that no longer exists
    for path, text in rendered.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
