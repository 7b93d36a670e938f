"""An executed notebook made publishable: papermill's paths project-relative, and the notebook
as one HTML page that loads nothing from the network.

nbconvert's ``lab`` template puts three scripts from a CDN in every page: require.js (for
widgets), MathJax (for LaTeX in markdown) and Mermaid (for diagrams). The notebooks use none
of them, and a page that fetches code is one a reader cannot open offline or archive as it is.
The page template below is ``lab``'s with those three blocks emptied; its CSS and the figures
(inline PNG) are in the page already.
"""

from __future__ import annotations

from pathlib import Path

from effbert import config as cfg
from effbert import results

PAGE_TEMPLATE = "effbert-page.html.j2"
PAGE_TEMPLATE_SOURCE = """\
{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
"""


def portable_metadata(executed: Path) -> None:
    """papermill's record of where the notebook was written, made project-relative (a
    published notebook names no folder of the machine it ran on)."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    record = notebook.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):  # input_path: a path, or the notebook itself
        if isinstance(record.get(key), str):
            record[key] = cfg.project_relative(record[key])
    results.write_text_atomic(executed, nbformat.writes(notebook))


def html_exporter():
    """nbconvert's HTML exporter with the ``lab`` look and no script from the network."""
    import jinja2
    from nbconvert import HTMLExporter

    return HTMLExporter(
        template_name="lab",
        template_file=PAGE_TEMPLATE,
        extra_loaders=[jinja2.DictLoader({PAGE_TEMPLATE: PAGE_TEMPLATE_SOURCE})],
    )


def page_title(notebook, fallback: str) -> str:
    """The notebook's first markdown heading (what a browser tab shows), else ``fallback``."""
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            if line.startswith("#"):
                return line.lstrip("#").strip() or fallback
    return fallback


def to_html(executed: Path, target: Path) -> None:
    """``executed`` (an .ipynb) as the page ``target``, written atomically."""
    import nbformat

    notebook = nbformat.read(executed, as_version=4)
    name = page_title(notebook, fallback=target.stem)
    body, _ = html_exporter().from_notebook_node(notebook, resources={"metadata": {"name": name}})
    results.write_text_atomic(target, body)
