"""Sphinx configuration: Markdown pages (MyST) plus the API reference from docstrings."""

project = "kdisco"
author = "kdisco developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
myst_heading_anchors = 3
# kubernetes' own docstrings are not ours to fix; our references resolve.
nitpicky = False
