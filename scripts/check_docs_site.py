"""Check the built documentation site in a real headless browser, offline.

    python scripts/check_docs_site.py                 # builds the site (mkdocs --strict) first
    python scripts/check_docs_site.py --site site     # checks an already built site

Serves the site from a local HTTP server on 127.0.0.1 and opens every page in headless Chromium
(Debian's ``chromium``, driven by Playwright: ``pip install -e '.[docs]'``, no browser download),
with every request to another host blocked, so a page that needs the network fails. Per page:

* it loads with no console error, no uncaught exception and no failed request;
* its math is rendered by the bundled MathJax: every formula typeset, no TeX error, and no raw
  ``$$``, ``\\(`` or ``\\[`` left in the visible text outside code;
* every link within the site resolves, to an existing page and, with a ``#fragment``, to an
  element with that id;
* a code block wider than the page scrolls, with a visible scrollbar (not cut off).

Then the search box finds "critical momenta". Prints one line per problem and exits 1 if any.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

ROOT = Path(__file__).resolve().parents[1]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
SEARCH_QUERY = "critical momenta"
#: raw TeX delimiters that must not survive in visible text (outside code)
RAW_MATH = ("$$", "\\(", "\\)", "\\[", "\\]", "\\begin{")

MATH_TIMEOUT_MS = 60_000
# True once every formula marked by arithmatex has been typeset (or there is none).
_TYPESET_JS = """() => document.querySelectorAll(".arithmatex").length
  === document.querySelectorAll(".arithmatex mjx-container").length"""

# Visible text of the article without code, and the state of its math, after MathJax ran.
_PAGE_STATE_JS = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const article = document.querySelector("article") || document.body;
  const copy = article.cloneNode(true);
  copy.querySelectorAll("pre, code, script, style, mjx-container").forEach(e => e.remove());
  return {
    text: copy.textContent,
    formulas: document.querySelectorAll(".arithmatex").length,
    typeset: document.querySelectorAll(".arithmatex mjx-container").length,
    mathErrors: document.querySelectorAll("mjx-merror").length,
    // wide code that would look cut off: no scrolling, or a scrollbar hidden until hovered
    cutOff: [...document.querySelectorAll("pre > code")].filter(e => {
      const style = getComputedStyle(e);
      const thumb = (style.scrollbarColor.match(/rgba?\([^)]*\)/) || ["rgba(0, 0, 0, 0)"])[0];
      const hidden = /rgba\([^)]*,\s*0\)$/.test(thumb);
      return e.scrollWidth > e.clientWidth + 1 && (!["auto", "scroll"].includes(style.overflowX) || hidden);
    }).map(e => e.textContent.slice(0, 60)),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    ids: [...document.querySelectorAll("[id]")].map(e => e.id),
  };
}"""


def find_chromium() -> str | None:
    """Path of the system Chromium (Debian: apt-get install chromium), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build_site(out: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
                   cwd=ROOT, env=env, check=True)  # fmt: skip


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``site`` on a free port of 127.0.0.1 in a daemon thread; returns (server, base URL)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages_of(site: Path) -> list[str]:
    """The site's pages as URL paths relative to its root ("", "usage/", ...)."""
    pages = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        pages.append("" if rel == "." else rel + "/")
    return pages


def _target_file(site: Path, path: str) -> Path:
    target = site / path.lstrip("/")
    return target / "index.html" if path.endswith("/") or target.is_dir() else target


def _ids_of(site: Path, path: str, cache: dict[str, set[str]]) -> set[str]:
    if path not in cache:
        html = _target_file(site, path).read_text(encoding="utf-8", errors="replace")
        cache[path] = set(re.findall(r"""\bid=["']?([^"'\s>]+)""", html))
    return cache[path]


def check_links(site: Path, base: str, page: str, links: list[str], ids: set[str],
                cache: dict[str, set[str]]) -> list[str]:  # fmt: skip
    """Problems with the links of one page that stay within the site."""
    problems, origin = [], urlparse(base).netloc
    for link in links:
        url, fragment = urldefrag(link)
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or parsed.netloc != origin:
            continue
        if not _target_file(site, parsed.path).is_file():
            problems.append(f"{page or '/'}: broken link {link}")
        elif fragment and parsed.path.endswith("/") and fragment not in (
                ids if urljoin(base, page) == url else _ids_of(site, parsed.path, cache)):
            problems.append(f"{page or '/'}: link to a missing anchor {link}")
    return problems


def check_page(context, site: Path, base: str, page: str, cache: dict[str, set[str]]) -> list[str]:
    """Load one page and return its problems."""
    where = page or "/"
    problems: list[str] = []
    tab = context.new_page()
    tab.on("console", lambda m: problems.append(f"{where}: console {m.type}: {m.text}")
           if m.type == "error" else None)  # fmt: skip
    tab.on("pageerror", lambda e: problems.append(f"{where}: uncaught exception: {e}"))
    tab.on("requestfailed", lambda r: problems.append(f"{where}: request failed: {r.url} ({r.failure})"))
    tab.on("response", lambda r: problems.append(f"{where}: HTTP {r.status} for {r.url}")
           if r.status >= 400 else None)  # fmt: skip
    tab.goto(urljoin(base, page), wait_until="networkidle")
    # MathJax typesets after the load; give it time on a busy machine (a timeout is reported
    # below as formulas not typeset)
    with contextlib.suppress(Exception):  # playwright's TimeoutError
        tab.wait_for_function(_TYPESET_JS, timeout=MATH_TIMEOUT_MS)
    state = tab.evaluate(_PAGE_STATE_JS)
    for raw in RAW_MATH:
        if raw in state["text"]:
            i = state["text"].index(raw)
            problems.append(f"{where}: raw math {raw!r} in the text: ...{state['text'][i - 40:i + 40]!r}")
    if state["typeset"] != state["formulas"]:
        problems.append(f"{where}: {state['typeset']} of {state['formulas']} formulas typeset")
    problems += [f"{where}: wide code block looks cut off (no visible scrollbar): {c!r}"
                 for c in state["cutOff"]]
    if state["mathErrors"]:
        problems.append(f"{where}: {state['mathErrors']} TeX errors")
    problems += check_links(site, base, page, state["links"], set(state["ids"]), cache)
    tab.close()
    return problems


def check_search(context, base: str) -> tuple[list[str], int]:
    """Type the query into the search box; returns (problems, number of results)."""
    tab = context.new_page()
    tab.goto(base, wait_until="networkidle")
    tab.click("input.md-search__input")
    tab.keyboard.type(SEARCH_QUERY)
    try:
        tab.wait_for_selector(".md-search-result__item", timeout=15_000)
    except Exception:  # playwright's TimeoutError
        return [f"search: no result for {SEARCH_QUERY!r}"], 0
    n = tab.locator(".md-search-result__item").count()
    tab.close()
    return [], n


def check_site(site: Path, chromium: str, screenshots: Path | None = None) -> list[str]:
    """All the checks on a built site; returns the problems (empty: all good)."""
    from playwright.sync_api import sync_playwright

    server, base = serve(site)
    blocked: list[str] = []
    problems: list[str] = []

    def route(r):
        if urlparse(r.request.url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort("internetdisconnected")

    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])  # fmt: skip
            context = browser.new_context(service_workers="block")
            context.route("**/*", route)
            cache: dict[str, set[str]] = {}
            pages = pages_of(site)
            for page in pages:
                problems += check_page(context, site, base, page, cache)
            search_problems, hits = check_search(context, base)
            problems += search_problems
            if screenshots is not None:
                screenshots.mkdir(parents=True, exist_ok=True)
                for page in ("", "semantics/", "api/memoptim/"):
                    tab = context.new_page()
                    tab.goto(urljoin(base, page), wait_until="networkidle")
                    name = page.strip("/").replace("/", "-") or "index"
                    tab.screenshot(path=str(screenshots / f"{name}.png"))
                    tab.close()
            browser.close()
    finally:
        server.shutdown()
    problems += [f"blocked a request to another host: {u}" for u in sorted(set(blocked))]
    print(f"checked {len(pages)} pages offline; search {SEARCH_QUERY!r}: {hits} results")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--site", type=Path, help="a built site (default: build one into a temporary directory)")
    p.add_argument("--chromium", default=None, help="the browser executable (default: chromium on PATH)")
    p.add_argument("--screenshots", type=Path, default=None, help="also save screenshots of a few pages here")
    args = p.parse_args(argv)
    chromium = args.chromium or find_chromium()
    if chromium is None:
        print("check_docs_site: no chromium found: apt-get install -y chromium", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        site = args.site
        if site is None:
            site = Path(tmp) / "site"
            build_site(site)
        problems = check_site(site.resolve(), chromium, args.screenshots)
    for problem in problems:
        print(problem)
    print("docs site: OK" if not problems else f"docs site: {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
