"""The documentation holds together: the pages build with ``mkdocs build --strict``
(every link between pages and every anchor resolves, every page is in the nav),
docs/cli.md is what ``--help`` prints today, the README stays short and its links
resolve, and every "SPEC §N" cited in the code names a section of docs/spec.md.

(The ``console`` examples of every page run in tests/test_readme.py.)"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from markdown.extensions.toc import slugify

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
SPEC = DOCS / "spec.md"


def test_the_pages_build_with_mkdocs_strict(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert done.returncode == 0 and not warnings, done.stderr
    assert (tmp_path / "site" / "index.html").exists() and (tmp_path / "site" / "checking" / "index.html").exists()


def test_the_cli_reference_is_what_help_prints_today():
    spec = importlib.util.spec_from_file_location("make_cli_reference", DOCS / "make_cli_reference.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    page = script.render()
    for command in ("jacobian", "grad", "vjp", "jvp", "hessian", "hvp", "check", "functions"):
        assert f"## gradcli {command}\n" in page and f"$ gradcli {command} --help\n" in page
    assert "\x1b[" not in page  # no colour codes
    assert max(len(line) for line in page.splitlines() if line.startswith("│")) == 100  # the fixed width
    assert (DOCS / "cli.md").read_text() == page, (
        "docs/cli.md is out of date with --help: run python3 docs/make_cli_reference.py")


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines: move the detail to a page under docs/"


def headings(page: Path) -> tuple[set[str], set[str]]:
    """The anchors of the page's headings as mkdocs makes them, and as GitHub does
    (which keeps every hyphen: "Story 1 — x" is ``story-1--x`` there, ``story-1-x`` here)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    titles = [re.sub(r"[`*]", "", m[1]).strip() for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)]
    github = {re.sub(r"[^\w\- ]", "", t.lower()).replace(" ", "-") for t in titles}
    return {slugify(t, "-") for t in titles}, github


def local_links(page: Path) -> list[tuple[str, Path, str]]:
    """Every relative link of ``page``: (as written, the file it names, its anchor)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.DOTALL)
    found = []
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if not re.match(r"[a-z]+://", link):
            path, _, anchor = link.partition("#")
            found.append((link, (page.parent / path) if path else page, anchor))
    return found


def test_every_link_resolves_on_github_as_in_mkdocs():
    """mkdocs checks links between pages; this checks the README's too, and that each
    anchor is the same on GitHub, where the pages are read as well."""
    pages = [README, *DOCS.glob("*.md")]
    links = [(page, *link) for page in pages for link in local_links(page)]
    assert len([link for link in links if link[0] == README]) >= 15
    for page, link, target, anchor in links:
        assert target.is_file(), f"{page.name} links to {link}: no such file"
        if anchor and target.suffix == ".md":
            ours, github = headings(target)
            assert anchor in ours and anchor in github, f"{page.name} links to {link}: no such heading (mkdocs or GitHub)"


def test_the_readme_links_every_page():
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", README.read_text()))
    pages = {page.name for page in DOCS.glob("*.md")}
    assert pages <= linked, f"README.md does not link {sorted(pages - linked)}"


def spec_sections() -> dict[str, list[str]]:
    """Section number -> the titles of its headings (the section's own, then its subsections)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in SPEC.read_text().splitlines():
        if m := re.match(r"^## (\d+)\. (.+)$", line):
            current = m[1]
            sections[current] = [m[2]]
        elif (m := re.match(r"^### (.+)$", line)) and current:
            sections[current].append(m[1])
    return sections


def test_the_spec_keeps_the_contracts_section_numbers():
    assert list(spec_sections()) == [str(n) for n in range(1, 11)]


def test_every_spec_citation_in_the_code_names_a_section_of_docs_spec():
    sections = spec_sections()
    citations = []
    for path in [*(ROOT / "gradcli").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]:
        for m in re.finditer(r'SPEC §(\d+)(?:,? \(?"([^"]+)")?', path.read_text()):
            citations.append((path.relative_to(ROOT), m[1], m[2]))
    assert len(citations) >= 10
    for path, number, title in citations:
        assert number in sections, f"{path} cites SPEC §{number}: docs/spec.md has no such section"
        if title:
            assert any(heading.startswith(title) for heading in sections[number]), (
                f'{path} cites SPEC §{number} "{title}": no such heading in that section of docs/spec.md')
