"""python -m sidecar.mixin render [--config FILE] --out DIR"""

from __future__ import annotations

import argparse
import sys

from . import ConfigError, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.mixin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("render", help="write the rules and dashboards for a config")
    run.add_argument("--config", help="YAML config merged over the defaults")
    run.add_argument("--out", required=True, help="directory to write into")
    args = parser.parse_args(argv)
    try:
        written = render(args.config, args.out)
    except (ConfigError, OSError) as exc:
        print(f"mixin render: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
