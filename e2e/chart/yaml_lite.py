"""Just enough of multi-document YAML for the chart tests (the e2e venv has no PyYAML):
split rendered output into documents and read their kind and name."""
import re


def documents(text):
    return [d for d in re.split(r"^---\s*$", text, flags=re.M) if re.search(r"^kind:", d, re.M)]


def kinds(text):
    return [re.search(r"^kind:\s*(\S+)", d, re.M).group(1) for d in documents(text)]


def document(text, kind, name):
    for d in documents(text):
        if re.search(rf"^kind:\s*{kind}\s*$", d, re.M) and re.search(rf"^  name:\s*{re.escape(name)}\s*$", d, re.M):
            return d
    raise AssertionError(f"{kind}/{name} not rendered")
