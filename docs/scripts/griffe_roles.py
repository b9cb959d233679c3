"""A Griffe extension: the reStructuredText in docstrings, as the API reference's Markdown.

trackkit's docstrings name other objects the Sphinx way (:class:`~trackkit.backend.Limits`,
:meth:`end`) and introduce code blocks with ``::``. mkdocstrings renders Markdown, so each
role becomes an optional cross-reference (a link when the object is in the reference, its
name in code otherwise) and ``::`` becomes ``:``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj):`(~?)([^`<>]+)`")
#: "text::" before an indented block is "text:" in reStructuredText, and "::" alone vanishes
LITERAL_ALONE = re.compile(r"(?m)^[ \t]*::[ \t]*$\n?")
LITERAL_AFTER = re.compile(r"(?m)(\S)::[ \t]*$")


def _target(obj: griffe.Object, name: str) -> str:
    """The full path of ``name`` as written in ``obj``'s docstring."""
    if "." in name:
        return name
    for scope in (obj, obj.parent):
        if isinstance(scope, griffe.Object) and name in scope.members:
            return f"{scope.path}.{name}"
    return name


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return

        def link(found: re.Match[str]) -> str:
            short, name = found[1], found[2].strip()
            title = name.rsplit(".", 1)[-1] if short else name
            target = html.escape(_target(obj, name), quote=True)
            return f'<autoref identifier="{target}" optional><code>{html.escape(title)}</code></autoref>'

        text = ROLE.sub(link, obj.docstring.value)
        text = LITERAL_AFTER.sub(r"\1:", LITERAL_ALONE.sub("", text))
        obj.docstring.value = text
