//! Dependencies: extracted once per artifact on ingest (immutable), resolved into
//! transitive trees on request, and used by ensure files to warm the cache.
//!
//! - extraction from the stored bytes lives with each protocol: `protocols::pypi::deps`
//!   (wheel METADATA, sdist PKG-INFO), `protocols::npm::deps` (package.json),
//!   `protocols::maven::deps` (POM with its parents and imported BOMs).
//! - `resolve`: the highest version satisfying each constraint among the versions the
//!   sources list, no backtracking, conflicts reported.
//! - `ensure`: ensure files and lockfiles → every artifact fetched and verified.
//! - routes: `routes::deps` (`GET /api/v1/artifacts/{sha256}/dependencies`, `POST /api/v1/ensure`).
//!
//! Storage: `batch_upsert_dependencies` writes one artifact's extraction in one
//! statement. Row 0 is the artifact's own identity (`kind = "self"`, `name`,
//! `requirement` = its version, `marker` = `known` or `unknown`); rows 1… are its
//! dependencies. "unknown" records an sdist whose dependencies are dynamic: never guessed.

pub mod archive;
pub mod cli;
pub mod ensure;
pub mod local;
pub mod resolve;
pub mod universe;

use serde::{Deserialize, Serialize};

use crate::cache::Category;
use crate::db::{Dependency, NewDependency};
use crate::protocols::{dependency_rules, Extractor};
use crate::proxy::Flow;
use crate::sources::Protocol;

/// What extraction found for one artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extracted {
    pub protocol: String,
    pub name: String,
    pub version: String,
    /// False when the artifact's dependencies cannot be known from its metadata.
    pub known: bool,
    pub dependencies: Vec<NewDependency>,
}

impl Extracted {
    pub fn rows(&self) -> Vec<NewDependency> {
        let mut rows = Vec::with_capacity(self.dependencies.len() + 1);
        rows.push(NewDependency {
            protocol: self.protocol.clone(),
            name: self.name.clone(),
            requirement: self.version.clone(),
            kind: "self".into(),
            optional: false,
            marker: if self.known { "known" } else { "unknown" }.into(),
        });
        rows.extend(self.dependencies.iter().cloned());
        rows
    }

    pub fn from_rows(rows: &[Dependency]) -> Option<Extracted> {
        let (head, rest) = rows.split_first()?;
        if head.kind != "self" || head.position != 0 {
            return None;
        }
        Some(Extracted {
            protocol: head.protocol.clone(),
            name: head.name.clone(),
            version: head.requirement.clone(),
            known: head.marker == "known",
            dependencies: rest
                .iter()
                .map(|d| NewDependency {
                    protocol: d.protocol.clone(),
                    name: d.name.clone(),
                    requirement: d.requirement.clone(),
                    kind: d.kind.clone(),
                    optional: d.optional,
                    marker: d.marker.clone(),
                })
                .collect(),
        })
    }
}

pub(crate) fn dep(
    protocol: &str,
    name: &str,
    requirement: &str,
    kind: &str,
    optional: bool,
    marker: &str,
) -> NewDependency {
    NewDependency {
        protocol: protocol.into(),
        name: name.into(),
        requirement: requirement.into(),
        kind: kind.into(),
        optional,
        marker: marker.into(),
    }
}

fn cache_key(state: &Flow, protocol: &str, sha256: &str) -> String {
    state
        .cache
        .key(Category::ArtifactDependencies, protocol, sha256)
}

/// Stores an extraction (one statement) and caches it forever.
pub async fn store(state: &Flow, sha256: &str, extracted: &Extracted) -> Result<(), String> {
    let repo = state.db().ok_or("database not ready")?;
    repo.batch_upsert_dependencies(sha256, &extracted.rows())
        .await
        .map_err(|e| e.to_string())?;
    state
        .cache
        .set_json(
            &cache_key(state, &extracted.protocol, sha256),
            extracted,
            Category::ArtifactDependencies,
        )
        .await;
    crate::metrics::metrics()
        .dependency_extractions
        .with_label_values(&[
            extracted.protocol.as_str(),
            if extracted.known { "known" } else { "unknown" },
        ])
        .inc();
    Ok(())
}

/// The stored extraction of an artifact: cache, then database.
pub async fn stored(
    state: &Flow,
    protocol: Protocol,
    sha256: &str,
) -> Result<Option<Extracted>, String> {
    if let Some(e) = state
        .cache
        .get_json::<Extracted>(&cache_key(state, protocol.as_str(), sha256))
        .await
    {
        return Ok(Some(e));
    }
    let repo = state.db().ok_or("database not ready")?;
    let rows = repo
        .dependencies_of(sha256)
        .await
        .map_err(|e| e.to_string())?;
    let found = Extracted::from_rows(&rows);
    if let Some(e) = &found {
        state
            .cache
            .set_json(
                &cache_key(state, &e.protocol, sha256),
                e,
                Category::ArtifactDependencies,
            )
            .await;
    }
    Ok(found)
}

/// The text of `{top}/{name}` (the first directory level) in a gzipped tarball, at most
/// `max` bytes — `PKG-INFO` of an sdist, `package.json` of an npm tarball; bounded
/// against archive bombs (`archive`).
pub(crate) fn top_level_file_in_tgz(
    path: &std::path::Path,
    name: &str,
    max: u64,
) -> Result<String, String> {
    archive::top_level_file_in_tgz(path, name, max, archive::LIMITS)
}

/// How long a failed extraction is remembered when the failure is in the artifact's own
/// bytes (an archive bomb, no metadata): the bytes never change, so walking them again
/// would only repeat the work. Failures that may pass (storage, an upstream parent POM)
/// are remembered for `ORCHARD_CACHE_TTL_NEGATIVE`.
const CONTENT_FAILURE_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn failure_key(state: &Flow, protocol: Protocol, sha256: &str) -> String {
    state.cache.key(
        Category::ArtifactDependencies,
        protocol.as_str(),
        &format!("failed/{sha256}"),
    )
}

/// A failed extraction: its message, and whether it comes from the artifact's bytes.
struct Failure {
    message: String,
    of_content: bool,
}

impl Failure {
    fn passing(message: impl ToString) -> Failure {
        Failure {
            message: message.to_string(),
            of_content: false,
        }
    }
}

/// Extracts the dependencies of a stored artifact now and stores them. Maven POMs load
/// their parents and BOMs through `loader`. A failure is remembered (see
/// `CONTENT_FAILURE_TTL`) and answered again without the work.
pub async fn extract_now(
    state: &Flow,
    protocol: Protocol,
    filename: &str,
    sha256: &str,
    loader: &dyn crate::protocols::maven::deps::PomLoader,
) -> Result<Extracted, String> {
    let key = failure_key(state, protocol, sha256);
    if let Some(reason) = state.cache.get(&key).await {
        return Err(format!(
            "{} (remembered from an earlier attempt)",
            String::from_utf8_lossy(&reason)
        ));
    }
    match extract(state, protocol, filename, sha256, loader).await {
        Ok(extracted) => {
            store(state, sha256, &extracted).await?;
            Ok(extracted)
        }
        Err(f) => {
            let ttl = if f.of_content {
                CONTENT_FAILURE_TTL
            } else {
                state.config.cache.ttl_negative
            };
            state
                .cache
                .set_with_ttl(&key, bytes::Bytes::from(f.message.clone()), Some(ttl))
                .await;
            Err(f.message)
        }
    }
}

async fn extract(
    state: &Flow,
    protocol: Protocol,
    filename: &str,
    sha256: &str,
    loader: &dyn crate::protocols::maven::deps::PomLoader,
) -> Result<Extracted, Failure> {
    let read = match dependency_rules(protocol).extractor() {
        Extractor::Archive(read) => read,
        Extractor::PomWithParents => {
            let (_, _, mut body) = state
                .storage
                .get(sha256, None)
                .await
                .map_err(Failure::passing)?;
            let mut xml = Vec::new();
            use futures::StreamExt;
            while let Some(chunk) = body.next().await {
                xml.extend_from_slice(&chunk.map_err(Failure::passing)?);
                if xml.len() > 16 << 20 {
                    return Err(Failure {
                        message: "POM is too large".into(),
                        of_content: true,
                    });
                }
            }
            // a parent or BOM may fail to load for a while: not the POM's own fault
            return crate::protocols::maven::deps::extract_pom(
                String::from_utf8_lossy(&xml).into_owned(),
                loader,
            )
            .await
            .map_err(Failure::passing);
        }
    };
    let tmp = state
        .storage
        .to_temp_file(sha256)
        .await
        .map_err(Failure::passing)?;
    let path = tmp.path().to_path_buf();
    let name = filename.to_string();
    let result = state
        .blocking
        .run(move || read(&path, &name))
        .await
        .map_err(Failure::passing)?;
    drop(tmp);
    result.map_err(|message| Failure {
        message,
        of_content: true,
    })
}

/// The commit hook that extracts a file's dependencies once it is stored (in the
/// background; the artifact is served anyway), or `None` when the protocol reads no
/// dependencies from a file of this name. Every protocol's artifact route uses it.
pub fn extraction_hook(
    protocol: Protocol,
    filename: &str,
) -> Option<crate::proxy::artifact::CommitHook> {
    if !extractable(protocol, filename) {
        return None;
    }
    let filename = filename.to_string();
    Some(Box::new(
        move |state: Flow, committed: crate::proxy::artifact::Committed| {
            actix_web::rt::spawn(extract_committed(
                state,
                protocol,
                filename,
                committed.sha256,
            ));
        },
    ))
}

/// The commit hook of extractable files: extracts once, logs failures (the artifact is
/// served anyway).
pub async fn extract_committed(state: Flow, protocol: Protocol, filename: String, sha256: String) {
    match stored(&state, protocol, &sha256).await {
        Ok(Some(_)) => return,
        Ok(None) => {}
        Err(e) => {
            tracing::debug!(error = %e, "dependency lookup failed before extraction");
            return;
        }
    }
    let loader = universe::ServerUniverse::new(&state);
    if let Err(e) = extract_now(&state, protocol, &filename, &sha256, &loader).await {
        crate::metrics::metrics()
            .dependency_extractions
            .with_label_values(&[protocol.as_str(), "failed"])
            .inc();
        tracing::warn!(package.file = %filename, artifact.sha256 = %sha256, error = %e, "dependencies not extracted");
    }
}

/// Whether Orchard extracts dependencies from a file of this name (the protocol's
/// `DependencyRules::extractable`).
pub fn extractable(protocol: Protocol, filename: &str) -> bool {
    dependency_rules(protocol).extractable(filename)
}
