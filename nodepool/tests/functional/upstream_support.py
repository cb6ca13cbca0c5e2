"""Running upstream Nodepool's released commands beside ours (the
virtualenv itself comes from the ``upstream_nodepool`` fixture)."""

from __future__ import annotations

import os
import pathlib

# Upstream's fake driver goes through openstacksdk's cloud config, which
# wants the cloud to exist; nothing listens at the address.
CLOUDS_YAML = """\
clouds:
  fake:
    auth:
      auth_url: http://127.0.0.1:9/identity
      username: nobody
      password: unused
      project_name: none
    region_name: fake-region
"""


def upstream_env(clouds: pathlib.Path) -> dict[str, str]:
    """The environment of an upstream command: without PYTHONPATH (the
    documented test command points it at this tree, whose ``nodepool``
    package would then shadow upstream's) or a statsd host."""
    env = dict(os.environ, OS_CLIENT_CONFIG_FILE=str(clouds))
    env.pop("STATSD_HOST", None)
    env.pop("PYTHONPATH", None)
    return env
