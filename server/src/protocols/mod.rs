//! Protocol adapters: what differs between registries. The shared flow is `proxy`.

pub mod maven;
pub mod npm;
pub mod pypi;

use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::db::NewDependency;
use crate::deps::ensure::{Entry, Planned};
use crate::deps::resolve::{Candidate, Environment};
use crate::deps::universe::ServerUniverse;
use crate::deps::Extracted;
use crate::error::ApiError;
use crate::proxy::Flow;
use crate::sources::{Protocol, Source};

/// What each protocol supplies to the shared dependency code (`deps`): which files
/// carry dependencies, how a requirement picks a version, and which dependencies apply.
/// Shared code asks `dependency_rules(protocol)` instead of matching on names.
pub trait DependencyRules: Send + Sync {
    /// Whether dependencies are extracted from a file of this name.
    fn extractable(&self, filename: &str) -> bool;

    /// How an extractable file is read.
    fn extractor(&self) -> Extractor;

    /// The version `requirement` picks among `candidates` (the highest satisfying one;
    /// `None` when none does), or why the requirement cannot be resolved.
    fn select(
        &self,
        requirement: &str,
        candidates: &[Candidate],
        env: &Environment,
    ) -> Result<Option<String>, String>;

    /// Whether a (non-optional, or asked-for optional) dependency applies in `env`:
    /// scopes, environment markers. Everything applies unless the protocol says not.
    fn applies(&self, _dependency: &NewDependency, _env: &Environment) -> Result<bool, String> {
        Ok(true)
    }

    /// Whether the registry lists a package's versions for `select` to choose from;
    /// `false` (Maven): the declared or managed version is taken as it is, and its
    /// existence is checked when its descriptor is read.
    fn lists_versions(&self) -> bool {
        true
    }

    /// Whether two names (of extras, packages) are the same by the protocol's rules.
    fn same_name(&self, a: &str, b: &str) -> bool {
        a == b
    }

    /// Whether an ensure-file entry may name this package (`deps::ensure::plain_value`
    /// characters by default; protocols allow their separators).
    fn valid_entry_name(&self, name: &str) -> bool {
        crate::deps::ensure::plain_value(name, "")
    }

    /// The versions of a package resolution may choose from, read through Orchard's own
    /// routes (`u`); only asked when `lists_versions`.
    fn versions<'a>(
        &'a self,
        _u: &'a ServerUniverse,
        name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>> {
        Box::pin(async move { Err(format!("versions of {name} are not listed")) })
    }

    /// One version's dependencies (extracted from its file, fetched through Orchard
    /// when needed) and the SHA-256 of that file when Orchard holds it.
    fn dependencies<'a>(
        &'a self,
        u: &'a ServerUniverse,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>>;

    /// The files an ensure-file entry stands for: its version and each file's Orchard
    /// path and name.
    fn plan<'a>(
        &'a self,
        u: &'a ServerUniverse,
        entry: &'a Entry,
        env: &'a Environment,
    ) -> LocalBoxFuture<'a, Result<Planned, String>>;
}

/// How a protocol's stored artifacts yield their dependencies.
pub enum Extractor {
    /// From the file alone, on the blocking pool: `read(path, file name)`.
    Archive(fn(&std::path::Path, &str) -> Result<crate::deps::Extracted, String>),
    /// A Maven POM: its effective model needs its parents and imported BOMs, loaded
    /// through Orchard (`protocols::maven::deps::extract_pom`).
    PomWithParents,
}

/// The dependency rules of `protocol`.
pub fn dependency_rules(protocol: Protocol) -> &'static dyn DependencyRules {
    match protocol {
        Protocol::Pypi => &pypi::deps::Rules,
        Protocol::Npm => &npm::deps::Rules,
        Protocol::Maven => &maven::deps::Rules,
    }
}

/// The rules of a protocol named in a row or a request (`None` for an unknown name).
pub fn dependency_rules_named(protocol: &str) -> Option<&'static dyn DependencyRules> {
    Protocol::parse(protocol).map(dependency_rules)
}

/// Which sources a request sees: all enabled sources of the protocol by priority
/// (`/pypi/…`, `/npm/…`, `/maven/…`) or one named source (`/sources/{name}/…`).
#[derive(Clone)]
pub enum View {
    Merged,
    Source(Arc<Source>),
}

impl View {
    pub fn sources(&self, state: &Flow, protocol: Protocol) -> Vec<Arc<Source>> {
        match self {
            View::Merged => state.sources.for_protocol(protocol),
            View::Source(s) => vec![s.clone()],
        }
    }

    /// The view of `/sources/{source}/{tail}`, with the raw tail.
    pub fn of_source_path(
        state: &Flow,
        path: &str,
        protocol: Protocol,
    ) -> Result<(View, String), ApiError> {
        let (name, tail) = source_and_tail(path)?;
        let source = state.sources.get(protocol, &name).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no enabled {} source named {name:?}",
                protocol.as_str()
            ))
        })?;
        Ok((View::Source(source), tail))
    }
}

/// One percent-decoded path segment; control characters are refused.
pub fn decode_segment(segment: &str) -> Result<String, ApiError> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("x={}", segment.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default();
    let s =
        String::from_utf8(bytes).map_err(|_| ApiError::BadRequest("path is not UTF-8".into()))?;
    if s.chars().any(|c| c.is_control()) {
        return Err(ApiError::BadRequest("control characters in path".into()));
    }
    Ok(s)
}

/// `/sources/{source}/{tail}` of a request: the decoded source name and the raw
/// (still percent-encoded) tail.
pub fn source_and_tail(path: &str) -> Result<(String, String), ApiError> {
    let mut parts = path.splitn(4, '/').skip(2);
    let source = decode_segment(parts.next().unwrap_or(""))?;
    Ok((source, parts.next().unwrap_or("").to_string()))
}
