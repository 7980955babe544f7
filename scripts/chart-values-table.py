#!/usr/bin/env python3
"""Writes the values table of charts/rolegate/README.md from charts/rolegate/values.yaml.

The comment lines right above a key are its description; every key is a row (nested keys by
their dotted path), with its default as written. The table sits between the markers
<!-- values-table:begin --> and <!-- values-table:end -->.

  scripts/chart-values-table.py          rewrite the README's table
  scripts/chart-values-table.py --check  exit 1 when the committed table is stale
"""
import pathlib
import re
import sys

CHART = pathlib.Path(__file__).resolve().parent.parent / "charts" / "rolegate"
BEGIN, END = "<!-- values-table:begin -->", "<!-- values-table:end -->"
KEY = re.compile(r"^( *)([A-Za-z0-9_.-]+):(?: (.*))?$")


def rows(text):
    lines = text.splitlines()
    stack, comment, out = [], [], []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        match = KEY.match(line)
        if not match:
            comment = []
            continue
        indent, key, value = len(match.group(1)), match.group(2), (match.group(3) or "").strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        following = next(
            (n for n in lines[i + 1 :] if n.strip() and not n.strip().startswith("#")), ""
        )
        nested = (
            not value
            and KEY.match(following) is not None
            and len(following) - len(following.lstrip()) > indent
        )
        description = " ".join(comment).replace("|", "\\|").replace("<", "&lt;")
        if nested:
            stack.append((indent, key))
            if description:
                out.append((path, "", description))
        else:
            out.append((path, f"`{value}`" if value else "", description))
        comment = []
    return out


def table(text):
    body = ["| Key | Default | Description |", "| --- | --- | --- |"]
    body += [f"| `{path}` | {default} | {description} |" for path, default, description in rows(text)]
    return "\n".join(body)


def main():
    readme = CHART / "README.md"
    current = readme.read_text()
    if BEGIN not in current or END not in current:
        sys.exit(f"{readme}: the markers {BEGIN} and {END} are missing")
    head, rest = current.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    wanted = f"{head}{BEGIN}\n{table((CHART / 'values.yaml').read_text())}\n{END}{tail}"
    if "--check" in sys.argv[1:]:
        if wanted != current:
            sys.exit("charts/rolegate/README.md: the values table is stale; run scripts/chart-values-table.py")
        return
    readme.write_text(wanted)


if __name__ == "__main__":
    main()
