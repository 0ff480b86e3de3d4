"""mkdocs hook: links from docs/ to repository files outside docs/ (``../benchmarks/x.txt``).

On GitHub such relative links work; in the built site they would point nowhere, and mkdocs
reports them as missing documentation files.  This hook checks that the target exists in the
repository (a missing one is a warning, so ``--strict`` fails) and keeps the link text only.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.repo_links")
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
