//! npm: `dependencies`, `optionalDependencies` and `peerDependencies` of a version,
//! from the tarball's `package.json` (the first directory level, `package/` by
//! convention). A name listed both as a dependency and an optional dependency is
//! optional (npm's rule); peers marked optional in `peerDependenciesMeta` are optional.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use futures::future::LocalBoxFuture;

use crate::deps::ensure::{Entry, Planned};
use crate::deps::resolve::{Candidate, Environment};
use crate::deps::universe::ServerUniverse;
use crate::deps::{dep, Extracted};
use crate::sources::Protocol;

const MAX_PACKAGE_JSON: u64 = 8 * 1024 * 1024;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub optional_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub peer_dependencies: BTreeMap<String, String>,
    #[serde(default)]
    pub peer_dependencies_meta: BTreeMap<String, PeerMeta>,
}

#[derive(Deserialize, Default)]
pub struct PeerMeta {
    #[serde(default)]
    pub optional: bool,
}

/// Dependencies of one version manifest (`package.json`, or a packument's version object).
pub fn from_manifest(m: &Manifest) -> Extracted {
    let mut deps = Vec::new();
    for (name, range) in &m.dependencies {
        if !m.optional_dependencies.contains_key(name) {
            deps.push(dep("npm", name, range, "runtime", false, ""));
        }
    }
    for (name, range) in &m.optional_dependencies {
        deps.push(dep("npm", name, range, "optional", true, ""));
    }
    for (name, range) in &m.peer_dependencies {
        let optional = m
            .peer_dependencies_meta
            .get(name)
            .is_some_and(|p| p.optional);
        deps.push(dep("npm", name, range, "peer", optional, ""));
    }
    Extracted {
        protocol: "npm".into(),
        name: m.name.clone(),
        version: m.version.clone(),
        known: true,
        dependencies: deps,
    }
}

pub fn from_package_json(text: &str) -> Result<Extracted, String> {
    let m: Manifest = serde_json::from_str(text).map_err(|e| format!("package.json: {e}"))?;
    if m.name.is_empty() || m.version.is_empty() {
        return Err("package.json has no name or version".into());
    }
    Ok(from_manifest(&m))
}

/// `*/package.json` at the first level of a gzipped tarball.
pub fn extract_tarball(path: &Path) -> Result<Extracted, String> {
    from_package_json(&crate::deps::top_level_file_in_tgz(
        path,
        "package.json",
        MAX_PACKAGE_JSON,
    )?)
}

/// npm's dependency rules: semver ranges (`latest` and empty mean any), the highest
/// satisfying version; aliases, URLs and git specs are not resolved.
pub struct Rules;

impl crate::protocols::DependencyRules for Rules {
    fn extractable(&self, filename: &str) -> bool {
        filename.ends_with(".tgz")
    }

    fn extractor(&self) -> crate::protocols::Extractor {
        crate::protocols::Extractor::Archive(|path, _| extract_tarball(path))
    }

    fn valid_entry_name(&self, name: &str) -> bool {
        crate::deps::ensure::plain_value(name.trim_start_matches('@'), "/")
            && name.matches('/').count() <= 1
            && !name.contains("..")
    }

    fn select(
        &self,
        requirement: &str,
        candidates: &[Candidate],
        _env: &Environment,
    ) -> Result<Option<String>, String> {
        let r = requirement.trim();
        let r = if r.is_empty() || r == "latest" {
            "*"
        } else {
            r
        };
        if r.contains(':') || r.contains('/') {
            return Err(format!(
                "npm requirement {r:?} (alias, URL or git) is not resolved"
            ));
        }
        let range = nodejs_semver::Range::parse(r).map_err(|e| format!("bad range {r:?}: {e}"))?;
        let mut ok: Vec<nodejs_semver::Version> = candidates
            .iter()
            .filter_map(|c| nodejs_semver::Version::parse(&c.version).ok())
            .filter(|v| range.satisfies(v))
            .collect();
        ok.sort();
        Ok(ok.last().map(|v| v.to_string()))
    }

    fn versions<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>> {
        Box::pin(async move {
            let Some(doc) = u.packument(name).await? else {
                return Ok(vec![]);
            };
            Ok(doc["versions"]
                .as_object()
                .map(|m| {
                    m.keys()
                        .map(|v| Candidate {
                            version: v.clone(),
                            ..Default::default()
                        })
                        .collect()
                })
                .unwrap_or_default())
        })
    }

    fn dependencies<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>> {
        Box::pin(async move {
            let doc = u
                .packument(name)
                .await?
                .ok_or_else(|| format!("{name} not found"))?;
            let v = doc["versions"]
                .get(version)
                .ok_or_else(|| format!("{name}@{version} not listed"))?;
            let manifest: crate::protocols::npm::deps::Manifest =
                serde_json::from_value(v.clone()).map_err(|e| format!("{name}@{version}: {e}"))?;
            let extracted = crate::protocols::npm::deps::from_manifest(&manifest);
            let file = v["dist"]["tarball"]
                .as_str()
                .and_then(|t| t.rsplit('/').next())
                .unwrap_or("")
                .to_string();
            Ok((
                extracted,
                u.cached_sha(Protocol::Npm, &format!("{name}/-/{file}"))
                    .await,
            ))
        })
    }

    fn plan<'a>(
        &'a self,
        u: &'a ServerUniverse,
        e: &'a Entry,
        env: &'a Environment,
    ) -> LocalBoxFuture<'a, Result<Planned, String>> {
        Box::pin(async move {
            let version = crate::deps::ensure::version_of(u, e, env).await?;
            let file = match &e.file {
                Some(f) => f.clone(),
                None => {
                    let doc = u
                        .packument(&e.name)
                        .await?
                        .ok_or_else(|| format!("{} not found in any npm source", e.name))?;
                    doc["versions"][&version]["dist"]["tarball"]
                        .as_str()
                        .and_then(|t| t.rsplit('/').next())
                        .map(str::to_string)
                        .ok_or_else(|| format!("{}@{version} not found", e.name))?
                }
            };
            let encoded = e.name.replace('/', "%2f");
            Ok((version, vec![(format!("/npm/{encoded}/-/{file}"), file)]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_dependencies() {
        let e = from_package_json(
            r#"{"name":"chokidar","version":"3.6.0","dependencies":{"anymatch":"~3.1.2","fsevents":"~2.3.2"},
                "optionalDependencies":{"fsevents":"~2.3.2"},"peerDependencies":{"typescript":">=4","react":"^18"},
                "peerDependenciesMeta":{"typescript":{"optional":true}}}"#,
        )
        .unwrap();
        let rows: Vec<(&str, &str, bool)> = e
            .dependencies
            .iter()
            .map(|d| (d.name.as_str(), d.kind.as_str(), d.optional))
            .collect();
        assert_eq!(
            rows,
            [
                ("anymatch", "runtime", false),
                ("fsevents", "optional", true),
                ("react", "peer", false),
                ("typescript", "peer", true)
            ]
        );
        assert!(from_package_json("{}").is_err());
        assert!(from_package_json("not json").is_err());
    }
}
