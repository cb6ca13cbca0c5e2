"""The ``nodepool`` command line tool."""

from __future__ import annotations

import argparse
import logging
import sys

from nodepool.cmd import base_parser, setup_logging
from nodepool.cmd.config_validator import validate

log = logging.getLogger("nodepool.cmd")


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("nodepool", "Administer nodepool nodes, images and requests")
    parser.add_argument("--debug", action="store_true", help="log debug output")
    sub = parser.add_subparsers(dest="command", title="commands")
    sub.add_parser("config-validate", help="validate the configuration file")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 1
    setup_logging(args.logconfig, debug=args.debug)
    if not args.debug and not args.logconfig:
        logging.getLogger().setLevel(logging.WARNING)
    if args.command == "config-validate":
        return validate(args.config, args.secure)
    parser.error(f"unknown command {args.command}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
