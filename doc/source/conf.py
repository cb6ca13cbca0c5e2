"""Sphinx configuration for the nodepool documentation."""

project = "Nodepool"
copyright = "Nodepool developers"
extensions: list[str] = []
master_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
