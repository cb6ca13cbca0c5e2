"""Nodepool: keeps pools of ready test nodes for Zuul."""
