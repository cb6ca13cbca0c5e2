"""The nodepool-launcher daemon's workers."""

from nodepool.launcher.launcher import NodePool

__all__ = ["NodePool"]
