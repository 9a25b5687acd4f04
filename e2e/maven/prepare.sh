#!/usr/bin/env bash
# Prepares the Maven end-to-end suite, skipping whatever is already there:
#   - $E2E/maven-upstream (upstream A): everything `mvn -B package` of ./project needs
#     (dependencies, parents, BOMs, plugins and their dependencies), fetched once by
#     Maven from its default repository and then turned into a remote repository
#     layout (no resolver bookkeeping, maven-metadata.xml, a .sha1 beside every
#     .jar/.pom/maven-metadata.xml)
#   - $E2E/maven-upstream-b (upstream B, for priority tests): slf4j-api at A's
#     version with a DIFFERENT jar (+ matching .sha1), and commons-io (a GAV A does
#     not have) with its parent POM chain
#   - $E2E/maven-upstream-boot: what `mvn package` of ./spring-boot (a Spring Boot 3
#     web application) downloads, as Maven stored it (so files without a POM, such as
#     plexus-utils 1.1, stay without one), in the remote layout
# Serve them with nginx.sh. The markers are .complete-$SET_VERSION: bump SET_VERSION
# (to refill both) whenever project/ or the lists below change.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E="${ORCHARD_E2E_DIR:-$HOME/.cache/orchard/e2e}"
UP_A="$E2E/maven-upstream"
UP_B="$E2E/maven-upstream-b"
UP_BOOT="$E2E/maven-upstream-boot"
SET_VERSION=1
# The GAV only B has (A has other commons-io versions, pulled in by plugins)
EXTRA_GAV=commons-io:commons-io:2.17.0
log() { printf '[e2e-maven] %s\n' "$*" >&2; }
mkdir -p "$E2E"

# Runs Maven isolated from any user settings (an empty settings.xml: Maven's
# default repository, no mirror), quietly and in batch mode; its output (with -q
# only errors, and ANSI resets) is shown only when it fails.
mvn_default() {
  mvn -B -q -s "$SCRATCH/settings.xml" "$@" >"$SCRATCH/mvn.log" 2>&1 ||
    { cat "$SCRATCH/mvn.log" >&2; echo "mvn $* failed" >&2; return 1; }
}

new_scratch() {
  SCRATCH=$(mktemp -d "$E2E/.maven-scratch.XXXXXX")
  trap 'rm -rf "$SCRATCH"' EXIT
  echo '<settings/>' >"$SCRATCH/settings.xml"
}

# Turns a Maven local repository into the layout of a remote one.
to_remote_layout() {
  local repo=$1 f dir sum native=0 computed=0
  find "$repo" \( -name _remote.repositories -o -name '*.lastUpdated' \
    -o -name resolver-status.properties \) -type f -delete
  rm -rf "$repo/org/orchard"
  # maven-metadata-<repoId>.xml -> maven-metadata.xml (the first repo id wins; with
  # Maven's default repository only that one id appears)
  while IFS= read -r f; do
    dir=$(dirname "$f")
    [[ -f $dir/maven-metadata.xml ]] || cp "$f" "$dir/maven-metadata.xml"
  done < <(find "$repo" -type f -name 'maven-metadata-*.xml' | sort)
  # A .sha1 (hex only) beside every .jar, .pom and maven-metadata.xml; Maven keeps
  # the ones it downloaded, check those against the file.
  while IFS= read -r f; do
    sum=$(sha1sum "$f" | cut -d' ' -f1)
    if [[ -f $f.sha1 ]]; then
      if [[ $(tr -d '\r\n' <"$f.sha1" | cut -d' ' -f1) != "$sum" ]]; then
        echo "checksum mismatch: $f" >&2; exit 1
      fi
      native=$((native + 1))
    else
      printf '%s' "$sum" >"$f.sha1"
      computed=$((computed + 1))
    fi
  done < <(find "$repo" -type f \( -name '*.jar' -o -name '*.pom' -o -name maven-metadata.xml \))
  log "${repo%.tmp}: $native .sha1 kept from Maven, $computed computed"
  find "$repo" -type d -empty -delete
}

# Prints "groupId:artifactId:version" of the <parent> of a POM (nothing if none).
pom_parent() {
  python3 - "$1" <<'PY'
import sys, xml.etree.ElementTree as ET
ns = {"m": "http://maven.apache.org/POM/4.0.0"}
p = ET.parse(sys.argv[1]).getroot().find("m:parent", ns)
if p is not None:
    print(":".join(p.findtext("m:" + k, namespaces=ns).strip() for k in ("groupId", "artifactId", "version")))
PY
}

# Prints the version of dependency $2:$3 declared in POM $1.
pom_dep_version() {
  python3 - "$@" <<'PY'
import sys, xml.etree.ElementTree as ET
ns = {"m": "http://maven.apache.org/POM/4.0.0"}
for d in ET.parse(sys.argv[1]).getroot().iterfind("m:dependencies/m:dependency", ns):
    if (d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns)) == tuple(sys.argv[2:4]):
        print(d.findtext("m:version", namespaces=ns).strip())
PY
}

gav_dir() { local g a v; IFS=: read -r g a v <<<"$1"; echo "${g//.//}/$a/$v"; }

# --- upstream A ---------------------------------------------------------------
fill_a() {
  local tmp="$UP_A.tmp"
  log "filling $UP_A with the build closure of $HERE/project (may take minutes)"
  new_scratch
  rm -rf "$tmp"
  cp -r "$HERE/project" "$SCRATCH/project"
  rm -rf "$SCRATCH/project/target"
  # go-offline: dependencies + plugins; package: what only a real build asks for
  # (compiler/surefire runtime deps, the surefire JUnit 4 provider, ...)
  (cd "$SCRATCH/project" &&
    mvn_default -Dmaven.repo.local="$tmp" dependency:go-offline dependency:resolve-plugins package)
  to_remote_layout "$tmp"
  rm -rf "$UP_A" "$SCRATCH"; mv "$tmp" "$UP_A"
  touch "$UP_A/.complete-$SET_VERSION"
}

# --- upstream B ---------------------------------------------------------------
fill_b() {
  local tmp="$UP_B.tmp" slf4j gav d pom
  log "filling $UP_B"
  new_scratch
  rm -rf "$tmp"; mkdir -p "$tmp"
  # 1. slf4j-api at the version the project uses (A has it), with a jar that differs
  #    from A's by one extra file
  slf4j=$(pom_dep_version "$HERE/project/pom.xml" org.slf4j slf4j-api)
  d="org/slf4j/slf4j-api/$slf4j"
  [[ -f $UP_A/$d/slf4j-api-$slf4j.jar ]] || { echo "upstream A lacks slf4j-api $slf4j" >&2; exit 1; }
  mkdir -p "$tmp/$d"
  cp "$UP_A/$d/slf4j-api-$slf4j.pom" "$UP_A/$d/slf4j-api-$slf4j.pom.sha1" "$tmp/$d/"
  python3 - "$UP_A/$d/slf4j-api-$slf4j.jar" "$tmp/$d/slf4j-api-$slf4j.jar" <<'PY'
import shutil, sys, zipfile
shutil.copyfile(sys.argv[1], sys.argv[2])
with zipfile.ZipFile(sys.argv[2], "a") as z:
    info = zipfile.ZipInfo("META-INF/orchard-upstream-b.txt", date_time=(2024, 1, 1, 0, 0, 0))
    z.writestr(info, "this jar was served by upstream B\n")
PY
  # 2. a GAV A does not have, plus its parent POM chain so B alone can resolve it
  [[ ! -d $UP_A/$(gav_dir "$EXTRA_GAV") ]] || { echo "upstream A already has $EXTRA_GAV" >&2; exit 1; }
  mvn_default -Dmaven.repo.local="$SCRATCH/repo" \
    org.apache.maven.plugins:maven-dependency-plugin:3.7.1:get -Dartifact="$EXTRA_GAV"
  gav=$EXTRA_GAV
  while [[ -n $gav ]]; do
    d=$(gav_dir "$gav")
    mkdir -p "$tmp/$d"
    find "$SCRATCH/repo/$d" -maxdepth 1 -type f \( -name '*.jar' -o -name '*.pom' -o -name '*.sha1' \) \
      -exec cp {} "$tmp/$d/" \;
    pom=$(ls "$tmp/$d/"*.pom)
    gav=$(pom_parent "$pom")
  done
  to_remote_layout "$tmp"
  rm -rf "$UP_B" "$SCRATCH"; mv "$tmp" "$UP_B"
  touch "$UP_B/.complete-$SET_VERSION"
}

# --- the Spring Boot upstream ---------------------------------------------------
fill_boot() {
  local tmp="$UP_BOOT.tmp"
  log "filling $UP_BOOT with what mvn package of $HERE/spring-boot downloads (may take minutes)"
  new_scratch
  rm -rf "$tmp"
  cp -r "$HERE/spring-boot" "$SCRATCH/boot"
  rm -rf "$SCRATCH/boot/target"
  (cd "$SCRATCH/boot" && mvn_default -Dmaven.repo.local="$tmp" package)
  to_remote_layout "$tmp"
  rm -rf "$UP_BOOT" "$SCRATCH"; mv "$tmp" "$UP_BOOT"
  touch "$UP_BOOT/.complete-$BOOT_SET"
}
# Refilled when the project changes (by content: a fresh clone's mtimes say nothing).
BOOT_SET=$(find "$HERE/spring-boot" -type f -not -path '*/target/*' | sort | xargs cat | sha256sum | cut -c1-16)

[[ -f $UP_A/.complete-$SET_VERSION ]] || fill_a
# B is derived from A: refill it when A was refilled after it
[[ -f $UP_B/.complete-$SET_VERSION && ! $UP_A/.complete-$SET_VERSION -nt $UP_B/.complete-$SET_VERSION ]] || fill_b

[[ -f $UP_BOOT/.complete-$BOOT_SET ]] || fill_boot

# --- summary ------------------------------------------------------------------
for up in "$UP_A" "$UP_B" "$UP_BOOT"; do
  log "$up: $(find "$up" -name '*.pom' | wc -l) .pom, $(find "$up" -name '*.jar' | wc -l) .jar," \
    "$(find "$up" -name '*.sha1' | wc -l) .sha1, $(find "$up" -name '*.pom' -printf '%h\n' | sort -u | wc -l) GAVs"
done
