"""``nodepool config-validate``: report every problem in a config file.

Stricter than the daemons, as upstream's validator: an unknown setting is
an error here (the daemons warn and ignore it), and so is a provider the
daemons would leave out.  What the file alone cannot settle (a cloud
missing from this machine's clouds.yaml, no ZooKeeper settings, which may
come from the secure file) is a warning and does not fail the check.
"""

from __future__ import annotations

import sys

from nodepool.config import validate_config


def validate(path: str, secure: str | None = None) -> int:
    """Print problems (one per line) to stderr; 0 when valid, 1 otherwise."""
    report = validate_config(path, secure)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.errors:
        for problem in report.errors:
            print(problem, file=sys.stderr)
        count = len(report.errors)
        print(f"{path}: configuration is NOT valid ({count} problem"
              f"{'s' if count != 1 else ''})", file=sys.stderr)
        return 1
    print(f"{path}: configuration is valid")
    return 0
