#!/usr/bin/env python3
"""The external programs the tests and benchmarks run, from one list (e2e/programs.tsv).

    programs.py install [--scope test|bench]   apt-get/go-install what is missing (skips what is there)
    programs.py check [--scope test|bench] [--source S ...]
                                               every listed program is there, or exit 1 naming
                                               each missing program and its package
    programs.py scan                           the programs the scripts and suites call, by file

`make test` runs `install` first and `check` before any test. The suite e2e/inventory
scans every script, suite, the Makefile and .ci/run (shell parsed by shfmt, Python by
`ast`) and fails when one calls a program that is not on the list, so a new dependency
is caught on any machine, not only on one where it happens to be missing.

Runs on the machine's python3 (standard library only): it is the first step of a run."""
import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "e2e/programs.tsv"
HOME = Path.home()
# The folders the list's `location` column may name, with the defaults the scripts use.
LOCATIONS = {
    "$ORCHARD_TOOLS_DIR": os.environ.get("ORCHARD_TOOLS_DIR", str(HOME / ".cache/orchard/tools")),
    "$ORCHARD_K8S_BIN": os.environ.get("ORCHARD_K8S_BIN", str(HOME / ".cache/orchard/k8s/bin")),
    "$ORCHARD_E2E_DIR": os.environ.get("ORCHARD_E2E_DIR", str(HOME / ".cache/orchard/e2e")),
    "$CARGO_TARGET_DIR": os.environ.get("CARGO_TARGET_DIR", str(HOME / ".cache/orchard/target")),
}
SCOPES = ("test", "bench")
SOURCES = ("debian", "essential", "machine", "crates.io", "go", "pypi", "npm", "project")


@dataclass
class Program:
    name: str
    package: str
    source: str
    installed_by: str
    location: str
    scope: str
    line: int

    def path(self):
        """Where the program is, or None."""
        if self.location == "PATH":
            found = shutil.which(self.name)
            if found:
                return found
            # root's PATH has the sbin folders; a plain user's may not
            for d in ("/usr/sbin", "/sbin"):
                if os.access(f"{d}/{self.name}", os.X_OK):
                    return f"{d}/{self.name}"
            return None
        folder = self.location
        for var, value in LOCATIONS.items():
            folder = folder.replace(var, value)
        p = Path(folder) / self.name
        return str(p) if os.access(p, os.X_OK) else None

    def hint(self):
        how = {
            "debian": f"Debian package {self.package} (apt-get install {self.package})",
            "essential": f"Debian package {self.package} (part of every Debian system)",
            "machine": f"{self.package} (this machine kind's toolchain; see README 'Requirements')",
            "crates.io": f"crate {self.package} (cargo install)",
            "go": f"Go module {self.package}",
            "pypi": f"PyPI package {self.package} (in the e2e virtualenv)",
            "npm": f"npm package {self.package}",
            "project": f"this repository ({self.package})",
        }[self.source]
        return f"{how}, installed by {self.installed_by}"


def load(path=LIST):
    """The list: one program a line, tab-separated columns, '#' comments."""
    rows, seen = [], set()
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = [c.strip() for c in raw.split("\t") if c.strip()]
        if len(cols) != 6:
            raise ValueError(f"{path}:{n}: want 6 tab-separated columns, got {len(cols)}: {raw!r}")
        p = Program(*cols, line=n)
        if p.source not in SOURCES:
            raise ValueError(f"{path}:{n}: unknown source {p.source!r} (one of {', '.join(SOURCES)})")
        if p.scope not in SCOPES:
            raise ValueError(f"{path}:{n}: unknown scope {p.scope!r} (one of {', '.join(SCOPES)})")
        if p.name in seen:
            raise ValueError(f"{path}:{n}: {p.name} is listed twice")
        seen.add(p.name)
        rows.append(p)
    return rows


def in_scope(rows, scope):
    """`test` programs are needed by everything; `bench` adds its own."""
    return [r for r in rows if r.scope == "test" or r.scope == scope]


def missing(rows):
    return [r for r in rows if r.path() is None]


# ----------------------------------------------------------------------------- install
def apt_install(packages):
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    opts = ["-o", "DPkg::Lock::Timeout=600", "-o", "Acquire::Retries=3"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"[programs] apt-get install {' '.join(packages)}", file=sys.stderr)
    subprocess.run(sudo + ["apt-get", *opts, "update", "-qq"], check=True, env=env)
    subprocess.run(sudo + ["apt-get", *opts, "install", "-y", "-qq", "--no-install-recommends", *packages],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def install(rows, scope):
    rows = in_scope(rows, scope)
    apt = sorted({r.package for r in missing(rows) if r.source == "debian"})
    if apt:
        apt_install(apt)
    for r in missing(rows):
        # Go tools this script owns (the Kubernetes binaries have their own build script).
        if r.source == "go" and r.installed_by == "e2e/programs.py":
            folder = Path(r.location.replace("$ORCHARD_TOOLS_DIR", LOCATIONS["$ORCHARD_TOOLS_DIR"]))
            folder.mkdir(parents=True, exist_ok=True)
            print(f"[programs] go install {r.package}", file=sys.stderr)
            subprocess.run(["go", "install", r.package], check=True,
                           env=dict(os.environ, GOBIN=str(folder), GOFLAGS="-mod=mod"))


def installed_here(r):
    """Rows `install` provides or expects before the other install scripts run."""
    return r.source in ("essential", "machine", "debian") or r.installed_by == "e2e/programs.py"


def report_missing(rows):
    gone = missing(rows)
    for r in gone:
        print(f"[programs] MISSING {r.name}: {r.hint()} (e2e/programs.tsv line {r.line})", file=sys.stderr)
    return gone


# ----------------------------------------------------------------------------- scan
# Shell words that are not programs.
BUILTINS = set("""
. : [ alias bg break builtin caller cd command compgen complete continue declare dirs disown echo
enable eval exec exit export false fc fg getopts hash help history jobs kill let local logout mapfile
popd printf pushd pwd read readarray readonly return set shift shopt source suspend test times trap
true type typeset ulimit umask unalias unset wait
""".split())
# Programs and functions that run their arguments as a command: how many leading
# words (after options) they take before it.
WRAPPERS = {"runuser": None, "setsid": 0, "nohup": 0, "nice": 0, "timeout": 1, "env": 0, "exec": 0,
            "command": 0, "sudo": 0, "xargs": 0, "time": 0, "as_pg": 0, "wait_until": 2}


def _lit(word):
    """The literal text of a shell word, with expansions as None; the word's last
    path component when it is `$DIR/name` (so "$VENV/bin/pip" is pip)."""
    parts = word.get("Parts", [])
    text, dynamic = "", False
    for p in parts:
        t = p.get("Type")
        if t == "Lit":
            text += p["Value"]
        elif t == "SglQuoted":
            text += p["Value"]
        elif t == "DblQuoted":
            for q in p.get("Parts", []):
                if q.get("Type") == "Lit":
                    text += q["Value"]
                else:
                    dynamic, text = True, ""
        else:
            dynamic, text = True, ""
    if dynamic:
        # "$X/bin/name": the literal tail after the last expansion names the program
        return text.rsplit("/", 1)[1] if "/" in text and text.rsplit("/", 1)[1] else None
    return text


def _is_array_expansion(word):
    parts = word.get("Parts", [])
    if len(parts) == 1 and parts[0].get("Type") == "DblQuoted":
        parts = parts[0].get("Parts", [])
    return len(parts) == 1 and parts[0].get("Type") == "ParamExp" and parts[0].get("Index") is not None


def _commands_of(args, functions):
    """The programs a simple command runs: wrappers that are programs (setsid, xargs, …)
    and the command they run."""
    i, found = 0, []
    while i < len(args):
        if _is_array_expansion(args[i]):  # "${SUDO[@]}" apt-get ...
            i += 1
            continue
        word = _lit(args[i])
        if word is None:
            return found
        name = word.rsplit("/", 1)[-1] if word.startswith(("/", "$")) or "/" in word else word
        if word.startswith("./") or word.endswith(".sh"):
            return found  # a script of this repository (scanned itself)
        if name in WRAPPERS:
            skip = WRAPPERS[name]
            if name not in BUILTINS and name not in functions and name != "time":
                found.append(name)
            i += 1
            if name == "command" and i < len(args) and _lit(args[i]) in ("-v", "-V"):
                i += 1  # `command -v X` asks whether X is there: X is still a dependency
            if skip is None:  # runuser -u USER -- CMD
                while i < len(args) and _lit(args[i]) != "--":
                    i += 1
                i += 1
                continue
            # options of the wrapper, then its fixed leading operands
            while i < len(args) and (_lit(args[i]) or "").startswith("-"):
                opt = _lit(args[i])
                i += 2 if opt in ("-n", "-s", "-k") else 1
            if name == "env":
                while i < len(args) and "=" in (_lit(args[i]) or "="):
                    i += 1
            i += skip
            continue
        if name in BUILTINS or name in functions or not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
            return found
        return found + [name]
    return found


def _walk(node, visit):
    if isinstance(node, dict):
        visit(node)
        for v in node.values():
            _walk(v, visit)
    elif isinstance(node, list):
        for v in node:
            _walk(v, visit)


def shell_ast(text, shfmt):
    r = subprocess.run([shfmt, "--to-json", "-ln", "bash"], input=text, capture_output=True, text=True)
    if r.returncode != 0:
        raise ValueError(f"shfmt could not parse: {r.stderr.strip()}")
    return json.loads(r.stdout)


def shell_functions(tree):
    names = set()
    _walk(tree, lambda n: names.add(n["Name"]["Value"]) if n.get("Type") == "FuncDecl" else None)
    return names


def scan_shell(tree, functions):
    """[(program, line)] of every simple command in a parsed shell file."""
    found = []

    def visit(n):
        if n.get("Type") == "CallExpr" and n.get("Args"):
            for prog in _commands_of(n["Args"], functions):
                found.append((prog, n["Pos"]["Line"]))
    _walk(tree, visit)
    return found


# Names the Python suites give to programs this repository builds or the harness provides.
PY_NAMES = {"ORCHARD_BIN": "orchard", "OPERATOR_BIN": "orchard-operator", "sys.executable": "python3"}
PY_CALLS = {"run", "Popen", "check_output", "check_call", "call", "Proc"}


def _py_name(node, assigns, depth=0):
    """The program an argument-list expression starts with, or None."""
    if depth > 5 or node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value.rsplit("/", 1)[-1]
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "str" and node.args:
        return _py_name(node.args[0], assigns, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _py_name(node.right, assigns, depth + 1)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _py_first(node.left, assigns, depth + 1)
    dotted = ast.unparse(node)
    if dotted in PY_NAMES:
        return PY_NAMES[dotted]
    if isinstance(node, ast.Name) and node.id in assigns:
        return _py_name(assigns[node.id], assigns, depth + 1)
    return None


def _py_first(node, assigns, depth=0):
    """The first element of a command list expression."""
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        return None if isinstance(first, ast.Starred) else _py_name(first, assigns, depth)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _py_first(node.left, assigns, depth + 1)
    if isinstance(node, ast.Name) and node.id in assigns:
        return _py_first(assigns[node.id], assigns, depth + 1)
    return None


def scan_python(text):
    tree = ast.parse(text)
    assigns = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            assigns[n.targets[0].id] = n.value
    found = []
    for n in ast.walk(tree):
        if not isinstance(n, ast.Call) or not n.args:
            continue
        fname = n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None)
        if fname in PY_CALLS:
            prog = _py_first(n.args[0], assigns)
            if prog:
                found.append((prog, n.lineno))
        elif fname == "which" and isinstance(n.args[0], ast.Constant):  # shutil.which("x")
            found.append((str(n.args[0].value), n.lineno))
    return found


def makefile_shell(text):
    """The recipes of a Makefile as shell text (one command a line, make variables
    turned into the programs or shell variables they stand for), per target."""
    recipes, target, cmd = {}, None, ""
    subst = {"$(CARGO)": "cargo", "$(MAKE)": "make", "$(HELM)": "helm"}
    for raw in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_-]+):", raw)
        if m and not raw.startswith("\t"):
            target = m.group(1)
            continue
        if not raw.startswith("\t") or target is None:
            continue
        line = raw[1:]
        cmd += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        cmd = cmd.lstrip("@-")
        for k, v in subst.items():
            cmd = cmd.replace(k, v)
        cmd = re.sub(r"\$\(([A-Za-z0-9_]+)\)", r"${\1}", cmd).replace("$$", "$")
        recipes.setdefault(target, []).append(cmd)
        cmd = ""
    return {t: "\n".join(c) + "\n" for t, c in recipes.items()}


def files_to_scan(root=ROOT):
    """(path, scope) of every script and suite `make test` and `make bench` run."""
    out = []
    for p in sorted((root / "e2e").rglob("*")):
        if p.suffix not in (".sh", ".py") or "node_modules" in p.parts or not p.is_file():
            continue
        if p.parts[len(root.parts) + 1] in ("inventory",):  # the scanner's own test fixtures
            continue
        out.append((p, "bench" if "bench" in p.relative_to(root).parts else "test"))
    out.append((root / ".ci/run", "test"))
    return out


def scan(shfmt, root=ROOT):
    """{program: [(file:line, scope)]} for every program called anywhere."""
    shells, pys = [], []
    for p, scope in files_to_scan(root):
        is_shell = p.suffix == ".sh" or p.read_text().startswith("#!/usr/bin/env bash")
        (shells if is_shell else pys).append((p, scope))
    trees = [(p, scope, shell_ast(p.read_text(), shfmt)) for p, scope in shells]
    for target, text in makefile_shell((root / "Makefile").read_text()).items():
        trees.append((root / f"Makefile:{target}", "bench" if target == "bench" else "test", shell_ast(text, shfmt)))
    # functions are shared through sourced libraries: any function anywhere counts
    functions = set().union(*(shell_functions(t) for _, _, t in trees)) if trees else set()
    found = {}
    for p, scope, tree in trees:
        for prog, line in scan_shell(tree, functions):
            found.setdefault(prog, []).append((f"{_rel(p, root)}:{line}", scope))
    for p, scope in pys:
        for prog, line in scan_python(p.read_text()):
            found.setdefault(prog, []).append((f"{_rel(p, root)}:{line}", scope))
    return found


def _rel(p, root):
    s = str(p)
    return s[len(str(root)) + 1:] if s.startswith(str(root) + "/") else s


def unlisted(found, rows):
    """Programs called that the list lacks (or lists only for the benchmarks while a
    test calls them): {program: [where]}."""
    scope_of = {r.name: r.scope for r in rows}
    bad = {}
    for prog, wheres in found.items():
        for where, scope in wheres:
            listed = scope_of.get(prog)
            if listed is None or (listed == "bench" and scope == "test"):
                bad.setdefault(prog, []).append(where)
    return bad


def shfmt_path(rows):
    for r in rows:
        if r.name == "shfmt" and r.path():
            return r.path()
    raise SystemExit("shfmt is missing: run `python3 e2e/programs.py install` first")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("install", "check"):
        s = sub.add_parser(name)
        s.add_argument("--scope", choices=SCOPES, default="test")
        s.add_argument("--source", action="append", choices=SOURCES,
                       help="only programs of this source (repeatable)")
    sub.add_parser("scan")
    a = ap.parse_args()
    rows = load()
    if a.cmd == "scan":
        for prog, wheres in sorted(scan(shfmt_path(rows)).items()):
            print(f"{prog}\t{' '.join(w for w, _ in wheres)}")
        return 0
    # this repository's binaries are built by `make e2e` itself, after the check
    chosen = [r for r in in_scope(rows, a.scope)
              if (r.source in a.source if a.source else r.source != "project")]
    if a.cmd == "install":
        install(chosen, a.scope)
        chosen = [r for r in chosen if installed_here(r)]
    gone = report_missing(chosen)
    if gone:
        print(f"[programs] {len(gone)} program(s) missing: {', '.join(r.name for r in gone)}", file=sys.stderr)
        return 1
    print(f"[programs] {len(chosen)} programs present ({a.scope})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
