// MathJax 3 configuration for pymdownx.arithmatex (generic mode): typeset only the math that
// arithmatex marked, \( \) inline and \[ \] display. MathJax itself is bundled with the site
// (assets/mathjax/, copied from the django-static-mathjax package by docs/hooks.py): no CDN.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};
