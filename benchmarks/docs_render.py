"""The renderers of `build_docs.py`: maintained tools, run as subprocesses.

* pandoc (Debian package `pandoc`): the report's Markdown to a standalone HTML page;
* Chromium (Debian package `chromium`), headless: that page printed to an A4 PDF;
* Marp CLI (npm `@marp-team/marp-cli`, using the same Chromium): the slide deck's
  Markdown to an HTML deck and a PDF with the speaker notes as PDF notes;
* mermaid-cli (npm `@mermaid-js/mermaid-cli`, optional): the diagrams' `.mmd` sources to
  SVG. Its rendered SVGs are committed with the source's SHA-256 stamped in a trailing
  comment, so a check can tell a stale rendering without the tool;
* poppler's `pdfinfo` (Debian package `poppler-utils`): a PDF's page count.

Each tool is found on PATH or named by an environment variable (PANDOC, CHROMIUM, MARP,
MMDC, PDFINFO); a missing tool raises `ToolMissing`, whose message says how to install it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("build_docs")

#: Per tool: the environment variable naming it, the names looked up on PATH, how to get it.
TOOLS = {
    "pandoc": ("PANDOC", ("pandoc",), "apt-get install pandoc"),
    "chromium": (
        "CHROMIUM",
        ("chromium", "chromium-browser", "google-chrome"),
        "apt-get install chromium",
    ),
    "marp": ("MARP", ("marp",), "npm install --global @marp-team/marp-cli@4.5.1"),
    "mmdc": ("MMDC", ("mmdc",), "npm install --global @mermaid-js/mermaid-cli@11.17.0"),
    "pdfinfo": ("PDFINFO", ("pdfinfo",), "apt-get install poppler-utils"),
}
TIMEOUT_S = 180
STAMP = re.compile(r"<!-- rendered from (?P<name>\S+) sha256 (?P<digest>[0-9a-f]{64}) -->\s*$")


class ToolMissing(RuntimeError):
    """A renderer is not installed; the message names it and how to install it."""


class RenderError(RuntimeError):
    """A renderer ran and failed; the message holds its command and output."""


def tool(name: str) -> str:
    """The path of a renderer (see TOOLS), or ToolMissing."""
    env, names, install = TOOLS[name]
    if os.environ.get(env):
        named = os.environ[env]
        if shutil.which(named) is None:
            raise ToolMissing(f"{name}: ${env} names {named}, not an executable: {install}")
        return named
    for candidate in names:
        found = shutil.which(candidate)
        if found:
            return found
    raise ToolMissing(
        f"{name} not found (looked for {', '.join(names)} on PATH and ${env}): {install}"
    )


def missing(names: tuple[str, ...]) -> list[str]:
    """The tools of `names` that are not installed, each with how to install it."""
    out = []
    for name in names:
        try:
            tool(name)
        except ToolMissing as exc:
            out.append(str(exc))
    return out


def _run(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    log.debug("running %s", " ".join(args))
    try:
        done = subprocess.run(
            args,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise RenderError(f"{args[0]} took over {TIMEOUT_S} s: {' '.join(args)}") from exc
    if done.returncode != 0:
        raise RenderError(
            f"{' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


LOCAL_LINK = re.compile(r'<a\s+href="(?!https?:|mailto:|#)[^"]*"[^>]*>(.*?)</a>', re.DOTALL)


def unlink_local(html: str) -> str:
    """Links to other files of the repository as plain text: a printed page would turn
    them into absolute `file://` links of the machine that printed it."""
    return LOCAL_LINK.sub(r"\1", html)


def markdown_to_html(source: Path, html: Path, css: str, title: str) -> None:
    """A standalone HTML page from pandoc Markdown for printing (`css` is linked relative
    to the page; links to repository files become plain text)."""
    _run(
        [
            tool("pandoc"),
            str(source),
            "--from=markdown-implicit_figures",
            "--to=html5",
            "--standalone",
            f"--css={css}",
            f"--metadata=pagetitle:{title}",
            f"--output={html}",
        ]
    )
    html.write_text(unlink_local(html.read_text(encoding="utf-8")), encoding="utf-8")


def html_to_pdf(html: Path, pdf: Path) -> None:
    """The page printed by headless Chromium (paper size and margins from its @page CSS)."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        _run(
            [
                tool("chromium"),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-pdf-header-footer",
                f"--user-data-dir={profile}",
                f"--print-to-pdf={pdf.resolve()}",
                html.resolve().as_uri(),
            ]
        )
    if not pdf.is_file():
        raise RenderError(f"chromium wrote no {pdf}")


def marp(source: Path, output: Path, pdf: bool) -> None:
    """The deck as HTML, or as PDF with the speaker notes as PDF notes."""
    args = [tool("marp"), str(source), "--allow-local-files", f"--output={output}"]
    if pdf:
        args += ["--pdf", "--pdf-notes"]
    else:
        args += ["--html"]
    _run(args, env={"CHROME_PATH": tool("chromium")})


def pdf_pages(pdf: Path) -> int:
    """A PDF's page count, as poppler's pdfinfo reads it."""
    text = _run([tool("pdfinfo"), str(pdf)])
    match = re.search(r"^Pages:\s+(\d+)", text, re.MULTILINE)
    if not match:
        raise RenderError(f"pdfinfo gave no page count for {pdf}:\n{text}")
    return int(match.group(1))


# ---------------------------------------------------------------------- diagrams


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stamp_of(svg: Path) -> tuple[str, str] | None:
    """(source name, source SHA-256) stamped at the end of a rendered diagram, or None."""
    match = STAMP.search(svg.read_text(encoding="utf-8"))
    return (match["name"], match["digest"]) if match else None


def stale_diagrams(folder: Path) -> list[str]:
    """Every `.mmd` of `folder` whose `.svg` is missing or was rendered from other text."""
    out = []
    for source in sorted(folder.glob("*.mmd")):
        svg = source.with_suffix(".svg")
        if not svg.is_file():
            out.append(f"{svg.name}: missing")
        elif stamp_of(svg) != (source.name, digest(source)):
            out.append(f"{svg.name}: not rendered from the current {source.name}")
    return out


def render_diagram(source: Path) -> Path:
    """`<name>.svg` beside `<name>.mmd`, by mermaid-cli with the build's Chromium, stamped."""
    svg = source.with_suffix(".svg")
    with tempfile.TemporaryDirectory(prefix="mmdc-") as tmp:
        config = Path(tmp) / "puppeteer.json"
        settings = {"executablePath": tool("chromium"), "args": ["--no-sandbox"]}
        config.write_text(json.dumps(settings), encoding="utf-8")
        _run(
            [tool("mmdc"), "-i", str(source), "-o", str(svg), "-p", str(config), "-b", "white"],
        )
    text = svg.read_text(encoding="utf-8").rstrip()
    stamp = f"<!-- rendered from {source.name} sha256 {digest(source)} -->"
    svg.write_text(f"{text}\n{stamp}\n", encoding="utf-8")
    return svg
