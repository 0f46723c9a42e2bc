"""Checks the links between the manual's pages: every relative link of README.md, docs/*.md
and bench/*.md names a file that exists and, after '#', a heading that file has (GitHub's
anchors: lower case, punctuation dropped, spaces as '-').

Usage: python3 scripts/check-links.py   (exits 1 and lists the broken links)
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def anchors(path):
    found, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        heading = re.match(r"#+ (.*)", line)
        if heading and not in_code:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(text.replace(" ", "-"))
    return found


def main():
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")),
             *sorted((ROOT / "bench").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file, _, anchor = target.partition("#")
            path = (page.parent / file).resolve() if file else page
            where = f"{page.relative_to(ROOT)}: ({target})"
            if not path.exists():
                broken.append(f"{where}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{where}: no such heading in {path.relative_to(ROOT)}")
    if broken:
        sys.exit("check-links: broken links:\n  " + "\n  ".join(broken))
    print(f"check-links: every link of {len(pages)} pages leads somewhere")


if __name__ == "__main__":
    main()
