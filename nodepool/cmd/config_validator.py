"""``nodepool config-validate``: report every problem in a config file."""

from __future__ import annotations

import sys

from nodepool.config import check_config


def validate(path: str, secure: str | None = None) -> int:
    """Print problems (one per line) to stderr; 0 when valid, 1 otherwise."""
    problems = check_config(path, secure)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print(f"{path}: configuration is NOT valid ({len(problems)} problem"
              f"{'s' if len(problems) != 1 else ''})", file=sys.stderr)
        return 1
    print(f"{path}: configuration is valid")
    return 0
