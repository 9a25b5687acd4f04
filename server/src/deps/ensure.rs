//! Ensure files: what a build needs, fetched and verified ahead of time.
//!
//! Inputs (detected from the content): Orchard's YAML (`- {protocol, name, version}` or
//! `constraint`), `requirements.txt` with pins and `--hash`, npm `package-lock.json`
//! (v2/v3), and Maven coordinates (`group:artifact:version[:packaging[:classifier]]`,
//! one per line). Every entry becomes one or more files fetched through Orchard's own
//! routes with bounded concurrency; declared hashes (`--hash`, `integrity`) are checked
//! against the bytes served. A second run finds everything cached: no upstream fetch.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::resolve::{select, Environment, Universe};
use super::universe::ServerUniverse;
use crate::sources::Protocol;

/// An entry's version and its files, as (Orchard path, file name).
pub type Planned = (String, Vec<(String, String)>);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub protocol: String,
    pub name: String,
    /// An exact version, or a constraint to resolve (`>=2,<3`, `^1.2.0`).
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub constraint: Option<String>,
    /// Accepted digests (`sha256:…` hex, or an npm `sha512-…` integrity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<String>,
    /// npm: the tarball file name from the lockfile. Maven: packaging and classifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packaging: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
}

impl Entry {
    fn new(protocol: Protocol, name: &str) -> Entry {
        Entry {
            protocol: protocol.as_str().into(),
            name: name.into(),
            version: None,
            constraint: None,
            hashes: vec![],
            file: None,
            packaging: None,
            classifier: None,
        }
    }
}

/// One file's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub protocol: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub status: ItemStatus,
    /// Why a file `failed`: a stable label; `reason` says it in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<EnsureFailure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemStatus {
    /// Served from Orchard's cache.
    Cached,
    /// Fetched from the upstream now.
    Fetched,
    Failed,
}

impl ItemStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemStatus::Cached => "cached",
            ItemStatus::Fetched => "fetched",
            ItemStatus::Failed => "failed",
        }
    }
}

/// Why an ensure entry's file failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsureFailure {
    /// Its version or files could not be determined (not listed, no match, a source
    /// failed).
    Unplanned,
    /// Orchard could not serve the file (not found, upstream failure).
    FetchFailed,
    /// The file's digest is none of the hashes the entry allows.
    HashMismatch,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub total: usize,
    pub cached: usize,
    pub fetched: usize,
    pub failed: usize,
}

pub fn summarize(items: &[Item]) -> Summary {
    let mut s = Summary {
        total: items.len(),
        ..Default::default()
    };
    for i in items {
        match i.status {
            ItemStatus::Cached => s.cached += 1,
            ItemStatus::Fetched => s.fetched += 1,
            ItemStatus::Failed => s.failed += 1,
        }
    }
    s
}

/// Parses an ensure file of any supported kind; every entry's fields are checked
/// before any of them becomes part of a request path.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let entries = parse_any(text)?;
    for (i, e) in entries.iter().enumerate() {
        check(e).map_err(|m| format!("entry {} ({}): {m}", i + 1, e.name))?;
    }
    Ok(entries)
}

/// 1–214 ASCII letters, digits, `.`, `_`, `-` and the `extra` characters: what a name
/// or value in an ensure entry may be made of (no `?`, `#`, `%`, spaces or slashes
/// beyond what `extra` allows).
pub(crate) fn plain_value(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.len() <= 214
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
}

/// Names, versions and file names as the protocols allow them (no `?`, `#`, `%`,
/// spaces or path tricks), so that they cannot change the request they end up in.
fn check(e: &Entry) -> Result<(), String> {
    let name_ok = crate::protocols::dependency_rules_named(&e.protocol)
        .is_some_and(|r| r.valid_entry_name(&e.name));
    if !name_ok || e.name.starts_with('.') {
        return Err("invalid package name".into());
    }
    for v in [&e.version, &e.file, &e.packaging, &e.classifier]
        .into_iter()
        .flatten()
    {
        if !plain_value(v, "+!") || v.contains("..") {
            return Err(format!("invalid value {v:?}"));
        }
    }
    Ok(())
}

fn parse_any(text: &str) -> Result<Vec<Entry>, String> {
    let t = text.trim_start();
    if t.starts_with('{') {
        return parse_package_lock(text);
    }
    if t.starts_with("- ") || t.starts_with("entries:") || t.starts_with("---") {
        return parse_yaml(text);
    }
    let meaningful: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if !meaningful.is_empty() && meaningful.iter().all(|l| is_maven_coordinate(l)) {
        return meaningful
            .iter()
            .map(|l| parse_maven_coordinate(l))
            .collect();
    }
    parse_requirements(text)
}

fn parse_yaml(text: &str) -> Result<Vec<Entry>, String> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Doc {
        List(Vec<Entry>),
        Wrapped { entries: Vec<Entry> },
    }
    let doc: Doc = serde_norway::from_str(text).map_err(|e| format!("ensure file: {e}"))?;
    let entries = match doc {
        Doc::List(e) | Doc::Wrapped { entries: e } => e,
    };
    for (i, e) in entries.iter().enumerate() {
        if Protocol::parse(&e.protocol).is_none() {
            return Err(format!(
                "entry {}: protocol {:?} is not pypi, npm or maven",
                i + 1,
                e.protocol
            ));
        }
        if e.name.is_empty() {
            return Err(format!("entry {}: name is empty", i + 1));
        }
    }
    Ok(entries)
}

fn is_maven_coordinate(line: &str) -> bool {
    let parts: Vec<&str> = line.split(':').collect();
    (3..=5).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        })
}

fn parse_maven_coordinate(line: &str) -> Result<Entry, String> {
    let parts: Vec<&str> = line.split(':').collect();
    let mut e = Entry::new(Protocol::Maven, &format!("{}:{}", parts[0], parts[1]));
    e.version = Some(parts[2].to_string());
    e.packaging = parts.get(3).map(|s| s.to_string());
    e.classifier = parts.get(4).map(|s| s.to_string());
    Ok(e)
}

/// `requirements.txt`: one requirement per (continued) line, `--hash=alg:hex` options;
/// other options (`-i`, `--index-url`, `-r`, …) are refused by name.
pub fn parse_requirements(text: &str) -> Result<Vec<Entry>, String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for raw in text.lines() {
        let line = raw.split(" #").next().unwrap_or("").trim_end();
        if let Some(l) = line.strip_suffix('\\') {
            current.push_str(l);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    if !current.is_empty() {
        joined.push(current);
    }
    let mut out = Vec::new();
    for (n, line) in joined.iter().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('-') {
            return Err(format!(
                "line {}: option {:?} is not supported in ensure files",
                n + 1,
                line.split_whitespace().next().unwrap_or("")
            ));
        }
        let mut hashes = Vec::new();
        let mut spec = Vec::new();
        for word in line.split_whitespace() {
            if let Some(h) = word.strip_prefix("--hash=") {
                hashes.push(h.to_string());
            } else {
                spec.push(word);
            }
        }
        let spec = spec.join(" ");
        use std::str::FromStr;
        let req = pep508_rs::Requirement::<pep508_rs::VerbatimUrl>::from_str(&spec)
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        let mut e = Entry::new(
            Protocol::Pypi,
            &crate::protocols::pypi::deps::normalize(req.name.as_ref()),
        );
        let specifier = req
            .version_or_url
            .as_ref()
            .map(|v| v.to_string())
            .unwrap_or_default();
        match specifier.strip_prefix("==") {
            Some(v) if !v.contains([',', '*']) => e.version = Some(v.trim().to_string()),
            _ => e.constraint = Some(specifier),
        }
        e.hashes = hashes;
        out.push(e);
    }
    Ok(out)
}

/// npm `package-lock.json` v2/v3: every `packages` entry with a registry tarball.
pub fn parse_package_lock(text: &str) -> Result<Vec<Entry>, String> {
    let doc: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("package-lock.json: {e}"))?;
    let version = doc["lockfileVersion"]
        .as_u64()
        .ok_or("package-lock.json has no lockfileVersion")?;
    if version < 2 {
        return Err(format!(
            "package-lock.json v{version}: only lockfileVersion 2 and 3 are supported"
        ));
    }
    let packages = doc["packages"]
        .as_object()
        .ok_or("package-lock.json has no packages")?;
    let mut out = Vec::new();
    for (key, p) in packages {
        // Only installed packages: not the root, workspace folders, links or bundled copies.
        if !key.contains("node_modules/")
            || p["link"].as_bool() == Some(true)
            || p["inBundle"].as_bool() == Some(true)
        {
            continue;
        }
        let Some(version) = p["version"].as_str() else {
            continue;
        };
        let name = p["name"].as_str().map(str::to_string).unwrap_or_else(|| {
            key.rsplit("node_modules/")
                .next()
                .unwrap_or(key)
                .to_string()
        });
        let file = match p["resolved"].as_str() {
            Some(r) if r.starts_with("http") && r.ends_with(".tgz") => {
                r.rsplit('/').next().unwrap_or("").to_string()
            }
            Some(_) => continue, // git, file: and other non-registry dependencies
            // Lockfiles written with omit-lockfile-registry-resolved: the registry's naming.
            None => format!("{}-{version}.tgz", name.rsplit('/').next().unwrap_or(&name)),
        };
        let mut e = Entry::new(Protocol::Npm, &name);
        e.version = Some(version.to_string());
        e.file = Some(file);
        if let Some(i) = p["integrity"].as_str() {
            e.hashes = i.split_whitespace().map(str::to_string).collect();
        }
        out.push(e);
    }
    out.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
    out.dedup_by(|a, b| a.name == b.name && a.version == b.version);
    Ok(out)
}

/// Whether the served bytes match one of the declared digests (none declared: true).
fn digest_ok(hashes: &[String], sha256: &str, sha512: &[u8]) -> Result<(), String> {
    if hashes.is_empty() {
        return Ok(());
    }
    let sri512 = format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha512)
    );
    let ok = hashes.iter().any(|h| {
        h.eq_ignore_ascii_case(&format!("sha256:{sha256}"))
            || *h == sri512
            || h.eq_ignore_ascii_case(&format!("sha512:{}", hex::encode(sha512)))
    });
    // Older lockfiles carry sha1 (or sha384) integrity only: not checked here, since
    // Orchard itself verified the tarball against the registry's own digests on ingest.
    let only_unchecked = hashes
        .iter()
        .all(|h| h.starts_with("sha1-") || h.starts_with("sha384-"));
    if !ok && only_unchecked {
        return Ok(());
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hash mismatch: served sha256 {sha256} matches none of the {} declared",
            hashes.len()
        ))
    }
}

/// The entry's version: as given, or the highest listed one its constraint allows.
pub(crate) async fn version_of(
    u: &ServerUniverse,
    e: &Entry,
    env: &Environment,
) -> Result<String, String> {
    if let Some(v) = &e.version {
        return Ok(v.clone());
    }
    let constraint = e.constraint.as_deref().unwrap_or("");
    let candidates = u.versions(&e.protocol, &e.name).await?;
    select(&e.protocol, constraint, &candidates, env)?
        .ok_or_else(|| format!("no version of {} satisfies {constraint:?}", e.name))
}

/// The files one entry stands for, as Orchard paths (with their declared digests): the
/// protocol's `DependencyRules::plan`.
async fn plan(u: &ServerUniverse, e: &Entry, env: &Environment) -> Result<Planned, String> {
    let protocol =
        Protocol::parse(&e.protocol).ok_or_else(|| format!("unknown protocol {}", e.protocol))?;
    crate::protocols::dependency_rules(protocol)
        .plan(u, e, env)
        .await
}

/// Runs one entry: plans its files and fetches each; reports one item per file.
pub async fn run_entry(u: &ServerUniverse, e: &Entry, env: &Environment) -> Vec<Item> {
    let failed = |cause: EnsureFailure,
                  reason: String,
                  version: Option<String>,
                  file: Option<String>| Item {
        protocol: e.protocol.clone(),
        name: e.name.clone(),
        version,
        file,
        sha256: None,
        status: ItemStatus::Failed,
        cause: Some(cause),
        reason: Some(reason),
    };
    let (version, files) = match plan(u, e, env).await {
        Ok(p) => p,
        Err(reason) => {
            return vec![failed(
                EnsureFailure::Unplanned,
                reason,
                e.version.clone(),
                None,
            )]
        }
    };
    let mut items = Vec::new();
    for (path, file) in files {
        let fetched = u.local.fetch(&path).await;
        if let Some(err) = fetched.error {
            items.push(failed(
                EnsureFailure::FetchFailed,
                err,
                Some(version.clone()),
                Some(file),
            ));
            continue;
        }
        if let Err(reason) = digest_ok(&e.hashes, &fetched.sha256, &fetched.sha512) {
            items.push(failed(
                EnsureFailure::HashMismatch,
                reason,
                Some(version.clone()),
                Some(file),
            ));
            continue;
        }
        let status = if fetched.cache == "hit" {
            ItemStatus::Cached
        } else {
            ItemStatus::Fetched
        };
        items.push(Item {
            protocol: e.protocol.clone(),
            name: e.name.clone(),
            version: Some(version.clone()),
            file: Some(file),
            sha256: Some(fetched.sha256),
            status,
            cause: None,
            reason: None,
        });
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_with_pins_hashes_and_constraints() {
        let text = "# generated\nrequests==2.34.2 \\\n    --hash=sha256:aaa \\\n    --hash=sha256:bbb\nsix>=1.10,<2  # comment\nFlask[async]==3.1.3\n\n";
        let e = parse(text).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(
            (
                e[0].name.as_str(),
                e[0].version.as_deref(),
                e[0].hashes.len()
            ),
            ("requests", Some("2.34.2"), 2)
        );
        assert_eq!(
            (e[1].version.as_deref(), e[1].constraint.as_deref()),
            (None, Some(">=1.10, <2"))
        );
        assert_eq!(
            (e[2].name.as_str(), e[2].version.as_deref()),
            ("flask", Some("3.1.3"))
        );
        assert!(parse("-i https://upstream.example/simple/\nsix\n")
            .unwrap_err()
            .contains("-i"));
        assert!(parse("six==[bad\n").is_err());
    }

    #[test]
    fn package_lock_yaml_and_maven() {
        let lock = r#"{"lockfileVersion":3,"packages":{"":{"name":"app"},
            "node_modules/ms":{"version":"2.1.3","resolved":"http://127.0.0.1:4873/ms/-/ms-2.1.3.tgz","integrity":"sha512-AAA"},
            "node_modules/@types/ms":{"version":"0.7.34","resolved":"http://x/@types/ms/-/ms-0.7.34.tgz"},
            "node_modules/a/node_modules/ms":{"version":"2.0.0","resolved":"http://x/ms/-/ms-2.0.0.tgz"},
            "node_modules/local":{"link":true,"resolved":"../local"},
            "node_modules/git-dep":{"version":"1.0.0","resolved":"git+ssh://git@upstream.example/x.git#abc"},
            "node_modules/@scope/no-resolved":{"version":"1.2.3"}}}"#;
        let e = parse(lock).unwrap();
        let got: Vec<(&str, &str, &str)> = e
            .iter()
            .map(|e| {
                (
                    e.name.as_str(),
                    e.version.as_deref().unwrap(),
                    e.file.as_deref().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("@scope/no-resolved", "1.2.3", "no-resolved-1.2.3.tgz"),
                ("@types/ms", "0.7.34", "ms-0.7.34.tgz"),
                ("ms", "2.0.0", "ms-2.0.0.tgz"),
                ("ms", "2.1.3", "ms-2.1.3.tgz")
            ]
        );
        assert!(parse(r#"{"lockfileVersion":1,"dependencies":{}}"#)
            .unwrap_err()
            .contains("lockfileVersion 2 and 3"));

        let y = parse("- {protocol: npm, name: ms, constraint: ^2.0.0}\n- {protocol: pypi, name: six, version: '1.16.0'}\n").unwrap();
        assert_eq!(
            (y[0].constraint.as_deref(), y[1].version.as_deref()),
            (Some("^2.0.0"), Some("1.16.0"))
        );
        assert!(parse("- {protocol: cargo, name: x}\n")
            .unwrap_err()
            .contains("cargo"));
        for bad in ["ms?x", "ms#x", "../x", "a b", "%2e%2e", "@a/b/c"] {
            let doc = format!("- {{protocol: npm, name: '{bad}', version: '1.0.0'}}\n");
            assert!(
                parse(&doc).unwrap_err().contains("invalid package name"),
                "{bad}"
            );
        }
        assert!(parse("- {protocol: npm, name: ms, version: '1.0.0?x'}\n")
            .unwrap_err()
            .contains("invalid value"));
        assert!(parse("- {protocol: maven, name: 'a:b', version: '../1'}\n").is_err());
        let ws = r#"{"lockfileVersion":3,"packages":{"":{},"packages/a":{"name":"a","version":"1.0.0"},"node_modules/a":{"link":true,"resolved":"packages/a"}}}"#;
        assert!(
            parse(ws).unwrap().is_empty(),
            "workspace folders and links are not registry packages"
        );

        let m = parse("com.google.guava:guava:33.0.0-jre\norg.slf4j:slf4j-api:2.0.9:jar\ncom.acme:bom:1:pom\n").unwrap();
        assert_eq!(
            (m[0].name.as_str(), m[0].version.as_deref()),
            ("com.google.guava:guava", Some("33.0.0-jre"))
        );
        assert_eq!(m[2].packaging.as_deref(), Some("pom"));
    }

    #[test]
    fn digests() {
        let sha512 = [7u8; 64];
        let sri = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(sha512)
        );
        assert!(digest_ok(&[], "x", &sha512).is_ok());
        assert!(digest_ok(&[sri], "x", &sha512).is_ok());
        assert!(digest_ok(&["sha256:ABC".into()], "abc", &sha512).is_ok());
        assert!(digest_ok(&["sha256:abd".into()], "abc", &sha512)
            .unwrap_err()
            .contains("mismatch"));
        assert!(
            digest_ok(&["sha1-AAAA".into()], "abc", &sha512).is_ok(),
            "sha1-only integrity is not a mismatch"
        );
        assert!(digest_ok(&["sha1-AAAA".into(), "sha512-BBBB".into()], "abc", &sha512).is_err());
    }
}
