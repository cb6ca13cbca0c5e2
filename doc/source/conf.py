"""Sphinx configuration for the nodepool documentation."""

project = "Nodepool"
copyright = "Nodepool developers"
extensions: list[str] = ["sphinx.ext.autodoc"]
# The driver contract is documented from the base classes' docstrings.
autodoc_member_order = "bysource"
autodoc_typehints = "none"
master_doc = "index"
exclude_patterns: list[str] = []
html_theme = "alabaster"
