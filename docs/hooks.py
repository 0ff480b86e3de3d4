"""mkdocs hooks: links to repository files outside docs/, and the bundled math renderer.

* Links from docs/ to repository files outside docs/ (``../benchmarks/x.txt``): on GitHub such
  relative links work; in the built site they would point nowhere, and mkdocs reports them as
  missing documentation files.  This hook checks that the target exists in the repository (a
  missing one is a warning, so ``--strict`` fails) and keeps the link text only.
* MathJax is served with the site, not from a CDN, so the math renders offline: the needed
  parts of the MathJax 3 distribution of the ``django-static-mathjax`` package (the ``docs``
  extra) are added to the site's files under ``assets/mathjax/``.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.repo_links")
#: where the site serves MathJax (mkdocs.yml's extra_javascript names the entry point in it)
MATHJAX_DIR = "assets/mathjax"
#: the parts of MathJax's es5 distribution the site needs: the TeX/MathML-to-CHTML entry point,
#: the TeX extensions it may autoload, its fonts, the context menu and its accessibility parts
MATHJAX_PARTS = ("tex-mml-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y")


def mathjax_root() -> Path:
    """The es5 directory of the installed MathJax distribution (package ``mathjax``)."""
    spec = importlib.util.find_spec("mathjax")
    locations = list(spec.submodule_search_locations or []) if spec else []
    root = Path(locations[0]) / "static" / "mathjax" / "es5" if locations else None
    if root is None or not (root / MATHJAX_PARTS[0]).is_file():
        raise PluginError("the docs bundle MathJax from the django-static-mathjax package: "
                          "pip install -e '.[docs]'")
    return root


def on_files(files, config):
    root = mathjax_root()
    for part in MATHJAX_PARTS:
        path = root / part
        for f in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            uri = f"{MATHJAX_DIR}/{f.relative_to(root).as_posix()}"
            files.append(File.generated(config, uri, abs_src_path=str(f)))
    return files
_LINK = re.compile(r"\[(?P<text>[^\]]*)\]\((?P<target>\.\./[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def on_page_markdown(markdown, page, config, files):
    docs = Path(config["docs_dir"]).resolve()
    src = (docs / page.file.src_path).parent

    def repl(m: re.Match[str]) -> str:
        target = (src / m["target"]).resolve()
        if docs in target.parents:
            return m[0]  # inside docs/: mkdocs validates it
        if not target.exists():
            log.warning("%s: link to %s, which does not exist in the repository", page.file.src_path,
                        m["target"])
        return m["text"]

    return _LINK.sub(repl, markdown)
