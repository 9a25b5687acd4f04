#!/usr/bin/env python3
"""Publishes npm tarballs to a registry with the npm publish protocol, over plain HTTP.

    python3 publish.py REGISTRY_URL TOKEN TARBALL...

Not `npm publish`: that obeys `publishConfig` inside packages and could go elsewhere.
Each tarball becomes one PUT /{name} carrying its package.json as the version's
manifest and the tarball as the attachment. Tarballs are published per package in
ascending semver order, so `latest` ends up on the highest version. A version the
registry already has (409) counts as published.
"""
import base64
import hashlib
import json
import re
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request


def read_manifest(path):
    """The package.json inside a tarball (its top folder is usually `package/`,
    but not always: older @types tarballs use e.g. `node/`)."""
    with tarfile.open(path, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        candidates = [m for m in members if m.name.lstrip("./") == "package/package.json"]
        candidates += [m for m in members if re.fullmatch(r"(\./)?[^/]+/package\.json", m.name)]
        if not candidates:
            raise ValueError(f"{path}: no package.json")
        return json.load(tar.extractfile(candidates[0]))


def semver_key(version):
    """Sort key: numeric release parts, then a pre-release sorts before its release."""
    release, _, pre = version.split("+", 1)[0].partition("-")
    nums = tuple(int(x) if x.isdigit() else 0 for x in release.split("."))
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if pre else None
    return nums, (1,) if pre_key is None else (0, pre_key)


def publish(registry, token, path):
    with open(path, "rb") as f:
        data = f.read()
    manifest = {k: v for k, v in read_manifest(path).items() if not k.startswith("_")}
    name, version = manifest["name"], manifest["version"]
    filename = f"{name.split('/')[-1]}-{version}.tgz"   # @scope/pkg -> pkg-1.0.0.tgz
    manifest["_id"] = f"{name}@{version}"
    manifest["dist"] = {
        "shasum": hashlib.sha1(data).hexdigest(),
        "integrity": "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        "tarball": f"{registry}/{name}/-/{filename}",
    }
    body = {
        "_id": name,
        "name": name,
        "description": manifest.get("description", ""),
        "dist-tags": {"latest": version},
        "versions": {version: manifest},
        "_attachments": {
            filename: {
                "content_type": "application/octet-stream",
                "data": base64.b64encode(data).decode(),
                "length": len(data),
            }
        },
    }
    req = urllib.request.Request(
        f"{registry}/{urllib.parse.quote(name, safe='@').replace('%2F', '%2f')}",  # @scope/pkg -> @scope%2fpkg
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            resp.read()
        return "published"
    except urllib.error.HTTPError as e:
        if e.code == 409:
            return "already there"
        raise SystemExit(f"publish {name}@{version} ({path}): HTTP {e.code}: {e.read()[:500]!r}")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    registry, token = sys.argv[1].rstrip("/"), sys.argv[2]
    tarballs = []
    for path in sys.argv[3:]:
        m = read_manifest(path)
        tarballs.append((m["name"], semver_key(m["version"]), path))
    counts = {}
    for _, _, path in sorted(tarballs):
        outcome = publish(registry, token, path)
        counts[outcome] = counts.get(outcome, 0) + 1
    print(f"publish.py: {registry}: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
          file=sys.stderr)


if __name__ == "__main__":
    main()
