//! Resolution: the transitive tree of an artifact's dependencies. For each dependency
//! the highest version that satisfies its constraint among the versions the sources
//! list (PEP 440 specifiers for PyPI, node-semver ranges for npm, the declared version
//! for Maven) — no backtracking; when one name ends up at several versions the
//! conflict is reported, not hidden. Each (name, version) is expanded once; later
//! occurrences are marked `repeated`. PyPI markers are evaluated when the caller gives a
//! target environment (`python_version`, `platform`), otherwise kept and not applied.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};

use super::Extracted;

/// One version the sources list.
#[derive(Debug, Clone, Default)]
pub struct Candidate {
    pub version: String,
    pub yanked: bool,
    /// PyPI `Requires-Python` of the version's files.
    pub requires_python: Option<String>,
}

/// The world resolution looks at (the server's goes through Orchard's own routes).
pub trait Universe {
    fn versions<'a>(
        &'a self,
        protocol: &'a str,
        name: &'a str,
    ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>>;
    /// The extraction of that version and its artifact's SHA-256 when cached.
    fn dependencies<'a>(
        &'a self,
        protocol: &'a str,
        name: &'a str,
        version: &'a str,
    ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Environment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<String>,
    /// `linux`, `darwin` or `win32` (sys_platform).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_depth: usize,
    pub include_optional: bool,
    pub environment: Environment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub requirement: String,
    pub kind: String,
    pub optional: bool,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub marker: String,
    pub status: NodeStatus,
    /// Why a node is in `error`: a stable label.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cause: Option<NodeError>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub repeated: bool,
    pub dependencies: Vec<Node>,
}

/// What became of one node of a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeStatus {
    Resolved,
    /// No listed version satisfies the requirement.
    Unsatisfiable,
    /// No source lists the package.
    NotFound,
    /// See `Node::cause`.
    Error,
    /// An sdist with dynamic metadata: its dependencies are not guessed.
    UnknownDependencies,
    Cycle,
    /// `max_depth` reached: its dependencies are not listed.
    DepthLimit,
    /// More than `MAX_NODES` nodes in the tree: not resolved.
    Budget,
}

/// Why a node could not be resolved (`NodeStatus::Error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeError {
    /// The package's versions could not be listed (a source failed).
    VersionsUnavailable,
    /// The requirement cannot be resolved (a direct URL, an alias, a range, bad syntax).
    UnresolvableRequirement,
    /// The chosen version's dependencies could not be read.
    DependenciesUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirer {
    pub by: String,
    pub requirement: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub name: String,
    pub versions: Vec<String>,
    pub required_by: Vec<Requirer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    pub protocol: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub known: bool,
    pub max_depth: usize,
    pub include_optional: bool,
    pub environment: Environment,
    pub dependencies: Vec<Node>,
    pub conflicts: Vec<Conflict>,
}

/// Picks the version `requirement` selects among `candidates`, by the protocol's rules
/// (`DependencyRules::select`: the highest satisfying one, stable before pre-releases,
/// yanked never).
pub fn select(
    protocol: &str,
    requirement: &str,
    candidates: &[Candidate],
    env: &Environment,
) -> Result<Option<String>, String> {
    crate::protocols::dependency_rules_named(protocol)
        .ok_or_else(|| format!("unknown protocol {protocol}"))?
        .select(requirement, candidates, env)
}

/// Whether a dependency applies: extras only when optional dependencies are included or
/// the extra was asked for, then the protocol's own rules (scopes, markers).
fn applies(
    d: &super::super::db::NewDependency,
    opts: &Options,
    extras: &[String],
) -> Result<bool, String> {
    let Some(rules) = crate::protocols::dependency_rules_named(&d.protocol) else {
        return Ok(true);
    };
    if d.optional && !opts.include_optional {
        let extra = d.kind.strip_prefix("extra:");
        if !extra.is_some_and(|x| extras.iter().any(|e| rules.same_name(e, x))) {
            return Ok(false);
        }
    }
    rules.applies(d, &opts.environment)
}

/// Nodes one resolution may visit; past it nodes are marked `budget` and not expanded.
pub const MAX_NODES: usize = 5000;

struct Walk<'a> {
    nodes: usize,
    universe: &'a dyn Universe,
    opts: &'a Options,
    expanded: BTreeSet<(String, String)>,
    /// name → [(version, requirer, requirement)]
    chosen: BTreeMap<String, Vec<Requirer>>,
    versions: HashMap<(String, String), Result<Vec<Candidate>, String>>,
}

pub async fn resolve(
    universe: &dyn Universe,
    root: &Extracted,
    sha256: &str,
    opts: &Options,
) -> Resolution {
    let mut walk = Walk {
        nodes: 0,
        universe,
        opts,
        expanded: BTreeSet::new(),
        chosen: BTreeMap::new(),
        versions: HashMap::new(),
    };
    let mut path = vec![root.name.clone()];
    let dependencies = walk.children(root, &[], 1, &mut path).await;
    let conflicts = walk
        .chosen
        .iter()
        .filter_map(|(name, reqs)| {
            let versions: BTreeSet<&str> = reqs.iter().map(|r| r.version.as_str()).collect();
            (versions.len() > 1).then(|| Conflict {
                name: name.clone(),
                versions: versions.iter().map(|v| v.to_string()).collect(),
                required_by: reqs.clone(),
            })
        })
        .collect();
    Resolution {
        protocol: root.protocol.clone(),
        name: root.name.clone(),
        version: root.version.clone(),
        sha256: sha256.to_string(),
        known: root.known,
        max_depth: opts.max_depth,
        include_optional: opts.include_optional,
        environment: opts.environment.clone(),
        dependencies,
        conflicts,
    }
}

impl Walk<'_> {
    fn children<'b>(
        &'b mut self,
        of: &'b Extracted,
        extras: &'b [String],
        depth: usize,
        path: &'b mut Vec<String>,
    ) -> LocalBoxFuture<'b, Vec<Node>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for d in &of.dependencies {
                match applies(d, self.opts, extras) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => tracing::debug!(error = %e, "marker not evaluated; dependency kept"),
                }
                self.nodes += 1;
                let mut node = Node {
                    name: d.name.clone(),
                    requirement: d.requirement.clone(),
                    kind: d.kind.clone(),
                    optional: d.optional,
                    marker: d.marker.clone(),
                    // set on every path below
                    status: NodeStatus::Resolved,
                    cause: None,
                    version: None,
                    sha256: None,
                    message: None,
                    repeated: false,
                    dependencies: vec![],
                };
                if self.nodes > MAX_NODES {
                    node.status = NodeStatus::Budget;
                    node.message = Some(format!(
                        "more than {MAX_NODES} nodes in this tree; not resolved"
                    ));
                    out.push(node);
                    continue;
                }
                let key = (d.protocol.clone(), d.name.clone());
                let lists_versions = crate::protocols::dependency_rules_named(&d.protocol)
                    .is_none_or(|r| r.lists_versions());
                if !lists_versions {
                    // Maven takes the declared (or managed) version; its existence is
                    // checked when its POM is read below.
                    self.versions.insert(
                        key.clone(),
                        Ok(vec![Candidate {
                            version: d.requirement.trim().to_string(),
                            ..Default::default()
                        }]),
                    );
                } else if !self.versions.contains_key(&key) {
                    let v = self.universe.versions(&d.protocol, &d.name).await;
                    self.versions.insert(key.clone(), v);
                }
                let candidates = match &self.versions[&key] {
                    Ok(c) if c.is_empty() => {
                        node.status = NodeStatus::NotFound;
                        out.push(node);
                        continue;
                    }
                    Ok(c) => c.clone(),
                    Err(e) => {
                        node.status = NodeStatus::Error;
                        node.cause = Some(NodeError::VersionsUnavailable);
                        node.message = Some(e.clone());
                        out.push(node);
                        continue;
                    }
                };
                let version = match select(
                    &d.protocol,
                    &d.requirement,
                    &candidates,
                    &self.opts.environment,
                ) {
                    Ok(Some(v)) => v,
                    Ok(None) => {
                        node.status = NodeStatus::Unsatisfiable;
                        node.message =
                            Some(format!("no listed version satisfies {:?}", d.requirement));
                        out.push(node);
                        continue;
                    }
                    Err(e) => {
                        node.status = NodeStatus::Error;
                        node.cause = Some(NodeError::UnresolvableRequirement);
                        node.message = Some(e);
                        out.push(node);
                        continue;
                    }
                };
                node.version = Some(version.clone());
                self.chosen
                    .entry(d.name.clone())
                    .or_default()
                    .push(Requirer {
                        by: format!("{}@{}", of.name, of.version),
                        requirement: d.requirement.clone(),
                        version: version.clone(),
                    });
                if path.contains(&d.name) {
                    node.status = NodeStatus::Cycle;
                    out.push(node);
                    continue;
                }
                let (extracted, sha) = match self
                    .universe
                    .dependencies(&d.protocol, &d.name, &version)
                    .await
                {
                    Ok(x) => x,
                    Err(e) => {
                        node.status = NodeStatus::Error;
                        node.cause = Some(NodeError::DependenciesUnavailable);
                        node.message = Some(e);
                        out.push(node);
                        continue;
                    }
                };
                node.sha256 = sha;
                node.status = if extracted.known {
                    NodeStatus::Resolved
                } else {
                    NodeStatus::UnknownDependencies
                };
                if !self.expanded.insert((d.name.clone(), version.clone())) {
                    node.repeated = true;
                } else if depth >= self.opts.max_depth {
                    if !extracted.dependencies.is_empty() {
                        node.status = NodeStatus::DepthLimit;
                    }
                } else {
                    let (node_extras, _) =
                        crate::protocols::pypi::deps::split_requirement(&d.requirement);
                    path.push(d.name.clone());
                    node.dependencies = self
                        .children(&extracted, &node_extras, depth + 1, path)
                        .await;
                    path.pop();
                }
                out.push(node);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deps::dep;

    /// Versions of a package and the dependencies of each.
    type Versions = Vec<(&'static str, Vec<(&'static str, &'static str)>)>;

    struct World(BTreeMap<(String, String), Versions>);

    impl Universe for World {
        fn versions<'a>(
            &'a self,
            protocol: &'a str,
            name: &'a str,
        ) -> LocalBoxFuture<'a, Result<Vec<Candidate>, String>> {
            Box::pin(async move {
                Ok(self
                    .0
                    .get(&(protocol.to_string(), name.to_string()))
                    .map(|vs| {
                        vs.iter()
                            .map(|(v, _)| Candidate {
                                version: v.to_string(),
                                ..Default::default()
                            })
                            .collect()
                    })
                    .unwrap_or_default())
            })
        }
        fn dependencies<'a>(
            &'a self,
            protocol: &'a str,
            name: &'a str,
            version: &'a str,
        ) -> LocalBoxFuture<'a, Result<(Extracted, Option<String>), String>> {
            Box::pin(async move {
                let vs = &self.0[&(protocol.to_string(), name.to_string())];
                let (_, deps) = vs.iter().find(|(v, _)| *v == version).unwrap();
                Ok((
                    Extracted {
                        protocol: protocol.into(),
                        name: name.into(),
                        version: version.into(),
                        known: true,
                        dependencies: deps
                            .iter()
                            .map(|(n, r)| dep(protocol, n, r, "runtime", false, ""))
                            .collect(),
                    },
                    Some(format!("sha-{name}-{version}")),
                ))
            })
        }
    }

    fn world() -> World {
        let mut m = BTreeMap::new();
        let mut add = |n: &str, vs: Vec<(&'static str, Vec<(&'static str, &'static str)>)>| {
            m.insert(("npm".to_string(), n.to_string()), vs);
        };
        add(
            "a",
            vec![
                ("1.0.0", vec![("c", "^1.0.0")]),
                ("1.2.0", vec![("c", "^1.1.0"), ("a-self", "*")]),
            ],
        );
        add("b", vec![("2.0.0", vec![("c", "~1.0.0")])]);
        add(
            "c",
            vec![
                ("1.0.0", vec![]),
                ("1.0.5", vec![]),
                ("1.1.0", vec![("a", "^1.0.0")]),
                ("2.0.0", vec![]),
            ],
        );
        add("a-self", vec![("0.1.0", vec![])]);
        World(m)
    }

    #[tokio::test]
    async fn highest_satisfying_conflicts_cycles_and_depth() {
        let root = Extracted {
            protocol: "npm".into(),
            name: "root".into(),
            version: "0.0.1".into(),
            known: true,
            dependencies: vec![
                dep("npm", "a", "^1.0.0", "runtime", false, ""),
                dep("npm", "b", "2", "runtime", false, ""),
                dep("npm", "zzz", "1", "runtime", false, ""),
            ],
        };
        let opts = Options {
            max_depth: 10,
            include_optional: false,
            environment: Environment::default(),
        };
        let r = resolve(&world(), &root, "rootsha", &opts).await;
        let a = &r.dependencies[0];
        assert_eq!(
            (a.version.as_deref(), a.status, a.sha256.as_deref()),
            (Some("1.2.0"), NodeStatus::Resolved, Some("sha-a-1.2.0"))
        );
        let c_under_a = &a.dependencies[0];
        assert_eq!(c_under_a.version.as_deref(), Some("1.1.0"));
        assert_eq!(
            c_under_a.dependencies[0].status,
            NodeStatus::Cycle,
            "c → a is a cycle"
        );
        assert_eq!(
            r.dependencies[1].dependencies[0].version.as_deref(),
            Some("1.0.5"),
            "b wants ~1.0.0"
        );
        assert_eq!(r.dependencies[2].status, NodeStatus::NotFound);
        assert_eq!(
            serde_json::to_value(NodeStatus::NotFound).unwrap(),
            "not-found",
            "the JSON labels are kebab-case"
        );
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].name, "c");
        assert_eq!(r.conflicts[0].versions, ["1.0.5", "1.1.0"]);

        let shallow = resolve(
            &world(),
            &root,
            "rootsha",
            &Options {
                max_depth: 1,
                ..opts
            },
        )
        .await;
        assert_eq!(shallow.dependencies[0].status, NodeStatus::DepthLimit);
        assert!(shallow.dependencies[0].dependencies.is_empty());
    }

    #[test]
    fn selection_per_protocol() {
        let c = |vs: &[&str]| {
            vs.iter()
                .map(|v| Candidate {
                    version: v.to_string(),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
        };
        let env = Environment::default();
        assert_eq!(
            select(
                "pypi",
                ">=2,<3",
                &c(&["1.0", "2.1", "2.5", "3.0", "2.9rc1"]),
                &env
            )
            .unwrap()
            .as_deref(),
            Some("2.5")
        );
        assert_eq!(
            select("pypi", "[socks]>=2", &c(&["2.0"]), &env)
                .unwrap()
                .as_deref(),
            Some("2.0")
        );
        assert_eq!(
            select("pypi", "", &c(&["1.0", "2.0b1"]), &env)
                .unwrap()
                .as_deref(),
            Some("1.0")
        );
        assert_eq!(select("pypi", ">=3", &c(&["2.0"]), &env).unwrap(), None);
        let mut yanked = c(&["1.0", "1.1"]);
        yanked[1].yanked = true;
        assert_eq!(
            select("pypi", "", &yanked, &env).unwrap().as_deref(),
            Some("1.0")
        );
        let mut py = c(&["1.0", "2.0"]);
        py[1].requires_python = Some(">=3.12".into());
        let env311 = Environment {
            python_version: Some("3.11".into()),
            platform: None,
        };
        assert_eq!(
            select("pypi", "", &py, &env311).unwrap().as_deref(),
            Some("1.0")
        );
        assert_eq!(
            select("npm", "^4.17.0", &c(&["4.16.0", "4.17.21", "5.0.0"]), &env)
                .unwrap()
                .as_deref(),
            Some("4.17.21")
        );
        assert_eq!(
            select("npm", "latest", &c(&["1.0.0", "1.2.0"]), &env)
                .unwrap()
                .as_deref(),
            Some("1.2.0")
        );
        assert!(select("npm", "npm:other@1", &c(&["1.0.0"]), &env).is_err());
        assert_eq!(
            select("maven", "2.17.2", &c(&["2.17.2"]), &env)
                .unwrap()
                .as_deref(),
            Some("2.17.2")
        );
        assert!(select("maven", "[1.0,2.0)", &c(&["1.5"]), &env).is_err());
    }
}
