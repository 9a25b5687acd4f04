//! The server's `Universe`: versions and dependencies read through Orchard's own routes
//! (merged views), extractions from the database or made on the spot.

use std::cell::RefCell;
use std::collections::HashMap;

use futures::future::LocalBoxFuture;
use serde::Deserialize;

use super::local::Local;
use super::resolve::{Candidate, Universe};
use super::Extracted;
use crate::protocols::maven::deps::{Gav, PomLoader};
use crate::protocols::pypi::names::version_of_filename;
use crate::proxy::Flow;
use crate::sources::Protocol;

const PYPI_JSON: &str = "application/vnd.pypi.simple.v1+json";

#[derive(Deserialize, Clone)]
pub struct PyFile {
    pub filename: String,
    pub url: String,
    #[serde(default)]
    pub hashes: HashMap<String, String>,
    #[serde(default, rename = "requires-python")]
    pub requires_python: Option<String>,
    #[serde(default)]
    pub yanked: serde_json::Value,
    /// PEP 658/714: the index serves `<file>.metadata` (an object of hashes, or true).
    #[serde(default, rename = "core-metadata")]
    pub core_metadata: serde_json::Value,
}

impl PyFile {
    pub fn offers_metadata(&self) -> bool {
        !matches!(
            self.core_metadata,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    }

    pub fn is_yanked(&self) -> bool {
        !matches!(
            self.yanked,
            serde_json::Value::Null | serde_json::Value::Bool(false)
        )
    }
}

#[derive(Deserialize, Clone)]
pub struct PyPage {
    pub files: Vec<PyFile>,
}

pub struct ServerUniverse {
    pub state: Flow,
    pub local: Local,
    pypi: RefCell<HashMap<String, Option<PyPage>>>,
    npm: RefCell<HashMap<String, Option<serde_json::Value>>>,
}

impl ServerUniverse {
    pub fn new(state: &Flow) -> Self {
        ServerUniverse {
            state: state.clone(),
            local: Local::new(state),
            pypi: Default::default(),
            npm: Default::default(),
        }
    }

    /// The merged PyPI project page (JSON), `None` when no source has the project.
    pub async fn pypi_page(&self, name: &str) -> Result<Option<PyPage>, String> {
        let name = crate::protocols::pypi::deps::normalize(name);
        if let Some(p) = self.pypi.borrow().get(&name) {
            return Ok(p.clone());
        }
        let (status, body) = self
            .local
            .document(&format!("/pypi/simple/{name}/"), PYPI_JSON)
            .await?;
        let page = match status {
            200 => Some(
                serde_json::from_slice::<PyPage>(&body)
                    .map_err(|e| format!("project page of {name}: {e}"))?,
            ),
            404 => None,
            s => {
                return Err(format!(
                    "project page of {name}: HTTP {s}: {}",
                    String::from_utf8_lossy(&body).trim()
                ))
            }
        };
        self.pypi.borrow_mut().insert(name, page.clone());
        Ok(page)
    }

    /// The merged packument (JSON), `None` when no source has the package.
    pub async fn packument(&self, name: &str) -> Result<Option<serde_json::Value>, String> {
        if let Some(p) = self.npm.borrow().get(name) {
            return Ok(p.clone());
        }
        let encoded = name.replace('/', "%2f");
        let (status, body) = self
            .local
            .document(&format!("/npm/{encoded}"), "application/json")
            .await?;
        let doc = match status {
            200 => Some(prune(
                serde_json::from_slice::<serde_json::Value>(&body)
                    .map_err(|e| format!("packument of {name}: {e}"))?,
            )),
            404 => None,
            s => return Err(format!("packument of {name}: HTTP {s}")),
        };
        self.npm.borrow_mut().insert(name.to_string(), doc.clone());
        Ok(doc)
    }

    /// Orchard path of a file listed on the merged page (`/sources/{s}/files/{p}/{f}`).
    pub fn pypi_file_path(&self, project: &str, href: &str) -> Result<String, String> {
        let base = url::Url::parse(&format!(
            "http://orchard/pypi/simple/{}/",
            crate::protocols::pypi::deps::normalize(project)
        ))
        .expect("static URL");
        let u = base
            .join(href)
            .map_err(|e| format!("file link {href:?}: {e}"))?;
        Ok(u.path().to_string())
    }

    /// The file of a version to take: a pure-Python wheel, another wheel, the sdist.
    pub fn pick_file<'p>(files: &'p [PyFile], version: &str) -> Option<&'p PyFile> {
        let of_version: Vec<&PyFile> = files
            .iter()
            .filter(|f| {
                version_of_filename(&f.filename).and_then(|v| normalize_version(&v))
                    == normalize_version(version)
            })
            .collect();
        of_version
            .iter()
            .find(|f| f.filename.ends_with("-none-any.whl"))
            .or_else(|| of_version.iter().find(|f| f.filename.ends_with(".whl")))
            .or_else(|| {
                of_version
                    .iter()
                    .find(|f| f.filename.ends_with(".tar.gz") || f.filename.ends_with(".zip"))
            })
            .copied()
    }

    /// The stored extraction of an artifact, made now if there is none.
    pub async fn extraction(
        &self,
        protocol: Protocol,
        filename: &str,
        sha256: &str,
    ) -> Result<Extracted, String> {
        if let Some(e) = super::stored(&self.state, protocol, sha256).await? {
            return Ok(e);
        }
        super::extract_now(&self.state, protocol, filename, sha256, self).await
    }
}

/// Keeps of a packument only what resolution reads (a packument can be tens of MB and
/// a resolution holds every one it reads until it ends).
fn prune(mut doc: serde_json::Value) -> serde_json::Value {
    const KEEP: [&str; 6] = [
        "name",
        "version",
        "dependencies",
        "optionalDependencies",
        "peerDependencies",
        "peerDependenciesMeta",
    ];
    if let Some(versions) = doc.get_mut("versions").and_then(|v| v.as_object_mut()) {
        for manifest in versions.values_mut() {
            let Some(m) = manifest.as_object_mut() else {
                continue;
            };
            let tarball = m.get("dist").and_then(|d| d.get("tarball")).cloned();
            m.retain(|k, _| KEEP.contains(&k.as_str()));
            if let Some(t) = tarball {
                m.insert("dist".into(), serde_json::json!({ "tarball": t }));
            }
        }
    }
    serde_json::json!({ "versions": doc.get("versions").cloned().unwrap_or_default() })
}

fn normalize_version(v: &str) -> Option<String> {
    use std::str::FromStr;
    pep508_rs::pep440_rs::Version::from_str(v)
        .ok()
        .map(|v| v.to_string())
}

impl PomLoader for ServerUniverse {
    fn load<'a>(&'a self, gav: &'a Gav) -> LocalBoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move {
            let (status, body) = self
                .local
                .parent_pom(&format!("/maven/{}", gav.pom_path()))
                .await?;
            match status {
                200 => Ok(Some(String::from_utf8_lossy(&body).into_owned())),
                404 => Ok(None),
                s => Err(format!(
                    "POM {}:{}:{}: HTTP {s}",
                    gav.group, gav.artifact, gav.version
                )),
            }
        })
    }
}

impl Universe for ServerUniverse {
    fn versions<'a>(
        &'a self,
        protocol: &'a str,
        name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>> {
        Box::pin(async move {
            crate::protocols::dependency_rules_named(protocol)
                .ok_or_else(|| format!("unknown protocol {protocol}"))?
                .versions(self, name)
                .await
        })
    }

    fn dependencies<'a>(
        &'a self,
        protocol: &'a str,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>> {
        Box::pin(async move {
            crate::protocols::dependency_rules_named(protocol)
                .ok_or_else(|| format!("unknown protocol {protocol}"))?
                .dependencies(self, name, version)
                .await
        })
    }
}

impl ServerUniverse {
    /// The SHA-256 of a cached PyPI file, from its Orchard path `/sources/{s}/files/{p}/{f}`.
    pub async fn cached_pypi_file(&self, path: &str) -> Option<String> {
        let rest = path.strip_prefix("/sources/")?;
        let (source, rest) = rest.split_once("/files/")?;
        let repo = self.state.db()?;
        repo.get_cached_url_with_artifact("pypi", source, rest)
            .await
            .ok()
            .flatten()
            .map(|(_, a)| a.sha256)
    }

    /// The SHA-256 of a cached file at `path` in the first source (by priority) that has it.
    pub async fn cached_sha(&self, protocol: Protocol, path: &str) -> Option<String> {
        let repo = self.state.db()?;
        for source in self.state.sources.for_protocol(protocol) {
            if let Ok(Some((_, art))) = repo
                .get_cached_url_with_artifact(protocol.as_str(), source.name(), path)
                .await
            {
                return Some(art.sha256);
            }
        }
        None
    }
}
