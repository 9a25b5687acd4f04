"""The list of external programs (e2e/programs.tsv) against what the scripts and suites
really call, and against this machine. Runs first in `make e2e`: a suite that starts
using a program the install does not provide fails here, on any machine, instead of
twenty minutes later on a machine that happens to lack it."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import programs  # noqa: E402

ROWS = programs.load()
SHFMT = programs.shfmt_path(ROWS)


def test_every_program_the_scripts_and_suites_call_is_listed():
    found = programs.scan(SHFMT)
    bad = programs.unlisted(found, ROWS)
    assert not bad, "called but not in e2e/programs.tsv (add a row with the package that provides it):\n" + \
        "\n".join(f"  {prog}: {', '.join(wheres[:5])}" for prog, wheres in sorted(bad.items()))
    # the scan is not vacuous: it sees the programs the suites are known to start
    for prog in ("nginx", "mvn", "psql", "redis-cli", "redis-server", "npm", "kubectl", "uv", "orchard"):
        assert prog in found, f"the scan no longer sees {prog}"


def test_the_scan_catches_a_program_missing_from_the_list(tmp_path):
    """The scanner itself: a shell script and a suite that call a program the list
    lacks are reported, through the wrappers and forms the scripts use."""
    root = tmp_path
    (root / "e2e/suite").mkdir(parents=True)
    (root / ".ci").mkdir()
    (root / ".ci/run").write_text("#!/usr/bin/env bash\nmake test\n")
    (root / "Makefile").write_text("test:\n\t@$(CARGO) test\nbench:\n\twrk -v\n")
    (root / "e2e/suite/start.sh").write_text(textwrap.dedent("""\
        #!/usr/bin/env bash
        helper() { printf '%s' "$1"; }
        NGINX=/usr/sbin/nginx
        setsid nohup "$STATE/bin/haproxy" -f x.cfg &
        as_pg() { "$@"; }
        as_pg "$PG_BIN/initdb" -D data
        v=$(socat -V | head -1)
        runuser -u postgres -- memcached -p 1
        cat <<'EOF'
        notaprogram --flag
        EOF
        case $1 in start) helper x ;; esac
        """))
    (root / "e2e/suite/test_x.py").write_text(textwrap.dedent("""\
        import subprocess, sys
        from pathlib import Path
        BIN = Path("/opt") / "bin"
        CMD = [str(BIN / "stunnel"), "-v"]
        subprocess.run(["toxiproxy-server", "-port", "1"])
        subprocess.run(CMD + ["x"])
        subprocess.run([sys.executable, "-c", "pass"])
        """))
    listed = [r for r in ROWS if r.name in ("cat", "head", "make", "cargo", "python3", "initdb", "setsid", "nohup")]
    found = programs.scan(SHFMT, root=root)
    bad = programs.unlisted(found, listed)
    # runuser is a program too (the wrapper, and the command it runs)
    assert set(bad) == {"haproxy", "socat", "memcached", "runuser", "toxiproxy-server", "stunnel", "wrk"}, bad
    assert bad["haproxy"] == ["e2e/suite/start.sh:4"]
    assert "notaprogram" not in found and "helper" not in found and "printf" not in found
    # a program listed for the benchmarks only is not enough for a test
    bench_only = listed + [programs.Program("socat", "socat", "debian", "x", "PATH", "bench", 0)]
    assert "socat" in programs.unlisted(found, bench_only)


def test_the_list_is_well_formed():
    names = [r.name for r in ROWS]
    assert len(names) == len(set(names))
    for r in ROWS:
        assert r.location == "PATH" or r.location.startswith(("/", "$")), r
        if r.source == "debian":
            assert r.installed_by == "e2e/services/install.sh", r


def test_every_listed_program_is_installed():
    """What `make test` checks before the tests, as a test too (and the project binaries,
    which `make e2e` has built by now)."""
    gone = [f"{r.name} ({r.hint()})" for r in programs.in_scope(ROWS, "test") if r.path() is None]
    assert not gone, "missing: " + "; ".join(gone)


def _owner(path):
    for p in (path, path.replace("/usr/bin/", "/bin/"), path.replace("/usr/sbin/", "/sbin/")):
        r = subprocess.run(["dpkg-query", "-S", p], capture_output=True, text=True)
        if r.returncode == 0:
            return r.stdout.split(":")[0].strip()
    return None


def _depends(package):
    r = subprocess.run(["dpkg-query", "-W", "-f=${Depends},${Pre-Depends}", package], capture_output=True, text=True)
    return {d.strip().split(" ")[0].split(":")[0] for alt in r.stdout.split(",") for d in alt.split("|") if d.strip()}


@pytest.mark.parametrize("row", [r for r in ROWS if r.source in ("debian", "essential") and r.scope == "test"],
                         ids=lambda r: r.name)
def test_the_named_debian_package_provides_the_program(row):
    """Installing the package the list names gives the program: the package owns the
    file, or depends on the package that does (psql and its wrapper package)."""
    path = row.path()
    assert path, f"{row.name} missing"
    owner = _owner(path) or _owner(str(Path(path).resolve()))
    assert owner, f"no Debian package owns {path}"
    assert owner == row.package or owner in _depends(row.package), \
        f"{path} comes from {owner}, not from {row.package} (nor one of its dependencies)"
