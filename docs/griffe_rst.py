"""Griffe extension for the API reference: memoptim's docstrings in Markdown.

The docstrings are Google-style (``Args:``, ``Returns:``) but use reST inline roles and
``.. math::`` blocks, which Markdown would show literally.  This extension rewrites them
(only the text handed to mkdocstrings; the source is untouched):

* ``:math:`x``` -> ``$x$`` and ``.. math::`` blocks -> ``$$ ... $$`` (MathJax via arithmatex;
  within a list item, display-style inline math, so that the list holds together);
* ``:class:`~a.b.C``` and the other cross-reference roles -> a code span (``C``);
* a class whose docstring is assembled at import time (``__doc__ = (... + _COMMON_DOC)``,
  memoptim.optim.adam / sgd) gets that docstring by importing its own module only.
"""

from __future__ import annotations

import importlib
import inspect
import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const):`([^`]+)`")
_MATH = re.compile(r":math:`([^`]+)`")
_BLOCK = re.compile(
    r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<first>.*)\n(?P<body>(?:(?:(?P=indent)[ \t]+.*)?\n)*)",
    re.MULTILINE,
)


def _role(m: re.Match[str]) -> str:
    target = m[1]
    if target.startswith("~"):
        target = target.rsplit(".", 1)[-1]
    return f"`{target.lstrip('.')}`"


#: the blank line before a math block inside a list item (indented)
_BLANK_BEFORE_NESTED = re.compile(r"\n[ \t]*\n(?=[ \t]+\.\. math::)")


def _block(m: re.Match[str]) -> str:
    indent = m["indent"]
    body = "\n".join(x for x in [m["first"], textwrap.dedent(m["body"])] if x.strip()).strip("\n")
    if "&" in body:
        body = "\\begin{aligned}\n" + body + "\n\\end{aligned}"
    if indent:
        # Inside a list item (indented by less than Markdown's 4 spaces), a $$ block would end
        # the list and stay raw: display-style inline math within the item's paragraph instead.
        return f"{indent}$\\displaystyle {' '.join(body.split())}$\n"
    lines = ["$$", *body.splitlines(), "$$"]
    return "\n".join(lines) + "\n\n"


def to_markdown(text: str) -> str:
    text = _BLANK_BEFORE_NESTED.sub("\n", text)
    text = _BLOCK.sub(_block, text + "\n").rstrip("\n")
    text = _MATH.sub(lambda m: f"${m[1].strip()}$", text)
    return _ROLE.sub(_role, text)


class RestToMarkdown(griffe.Extension):
    def on_class(self, *, cls: griffe.Class, **kwargs: object) -> None:
        if cls.docstring is None and "__doc__" in cls.members:
            obj = getattr(importlib.import_module(cls.module.path), cls.name, None)
            doc = getattr(obj, "__doc__", None)
            if doc:
                cls.docstring = griffe.Docstring(to_markdown(inspect.cleandoc(doc)), parent=cls)
            cls.del_member("__doc__")

    def on_package(self, *, pkg: griffe.Module, **kwargs: object) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)

        walk(pkg)
