"""`headroom` command line: `headroom agent ...` and `headroom operator ...`."""

from __future__ import annotations

import argparse
import sys

from headroom import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="headroom", description=__doc__)
    parser.add_argument("--version", action="version", version=f"headroom {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    # Each subcommand module owns its own flags; imported lazily so that
    # `headroom agent` does not pay for importing kopf.
    from headroom import agentcli as agent_cli
    from headroom.controller import cli as operator_cli

    agent_cli.add_parser(sub)
    operator_cli.add_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
