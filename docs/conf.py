"""Sphinx configuration: Markdown pages (MyST) plus the API reference from docstrings."""

project = "kdisco"
author = "kdisco developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "sphinx.ext.napoleon"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
html_theme = "alabaster"
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# A class's reference shows its docstring only: constructor arguments are documented
# there (Google style ``Args:``), and attrs-generated ``__init__``s have none.
autoclass_content = "class"
# `Name` in a docstring is a cross-reference (to kdisco.Name, or Name.method), as in
# ``help()`` it reads as a name; ``code`` stays literal.
default_role = "py:obj"
# One docstring style: Google (see tests/test_docstrings.py, which checks it).
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# Fields as ``:ivar:`` entries of their class, not separate attribute targets that
# would clash with the properties and methods documented beside them.
napoleon_use_ivar = True
# A field's type from its annotation, where the ``Attributes:`` entry gives none.
napoleon_attr_annotations = True
napoleon_use_rtype = True
myst_heading_anchors = 3
# kubernetes' own docstrings are not ours to fix; our references resolve.
nitpicky = False
