//! Dependency extraction on real artifacts of the e2e upstreams (filled by
//! `make e2e-prepare`; `make test` runs it before these tests): a wheel with extras and
//! markers, an sdist with old metadata, an npm package with optional dependencies, and a
//! POM with a parent chain and an imported BOM.

use std::collections::HashMap;
use std::path::PathBuf;

use futures::future::LocalBoxFuture;
use orchard_server::protocols::maven::deps::{extract_pom, Gav, PomLoader};
use orchard_server::protocols::npm::deps as npm;
use orchard_server::protocols::pypi::deps as pypi;

fn e2e() -> PathBuf {
    let dir = std::env::var("ORCHARD_E2E_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/orchard/e2e")
        });
    assert!(
        dir.join("pkgs-a").is_dir(),
        "{} has no e2e upstream files: run `make e2e-prepare`",
        dir.display()
    );
    dir
}

fn find(dir: PathBuf, prefix: &str, suffix: &str) -> PathBuf {
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .unwrap_or_else(|| panic!("no {prefix}*{suffix} in {}", dir.display()))
}

#[test]
fn requests_wheel_keeps_extras_and_markers() {
    let wheel = find(e2e().join("pkgs-a"), "requests-", ".whl");
    let e = pypi::extract_file(&wheel, &wheel.file_name().unwrap().to_string_lossy()).unwrap();
    assert_eq!(e.name, "requests");
    assert!(e.known);
    let by_name: HashMap<&str, &orchard_server::db::NewDependency> = e
        .dependencies
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    for runtime in ["charset-normalizer", "idna", "urllib3", "certifi"] {
        let d = by_name
            .get(runtime)
            .unwrap_or_else(|| panic!("{runtime} missing: {:?}", e.dependencies));
        assert_eq!((d.kind.as_str(), d.optional), ("runtime", false), "{d:?}");
        assert!(!d.requirement.is_empty());
    }
    let socks = by_name["pysocks"];
    assert_eq!((socks.kind.as_str(), socks.optional), ("extra:socks", true));
    assert!(
        socks.marker.contains("extra == 'socks'"),
        "{}",
        socks.marker
    );
    assert!(
        socks.requirement.contains("!=1.5.7"),
        "{}",
        socks.requirement
    );
}

#[test]
fn old_sdist_dependencies_are_unknown_not_guessed() {
    let sdist = find(e2e().join("pkgs-a"), "docopt-", ".tar.gz");
    let e = pypi::extract_file(&sdist, "docopt-0.6.2.tar.gz").unwrap();
    assert_eq!(
        (e.name.as_str(), e.version.as_str(), e.known),
        ("docopt", "0.6.2", false)
    );
    assert!(e.dependencies.is_empty());
}

#[test]
fn npm_tarball_with_an_optional_dependency() {
    let tgz = e2e().join("npm-samples/chokidar-3.6.0.tgz");
    let e = npm::extract_tarball(&tgz).unwrap();
    assert_eq!((e.name.as_str(), e.version.as_str()), ("chokidar", "3.6.0"));
    let fsevents = e
        .dependencies
        .iter()
        .find(|d| d.name == "fsevents")
        .expect("fsevents");
    assert_eq!(
        (
            fsevents.kind.as_str(),
            fsevents.optional,
            fsevents.requirement.as_str()
        ),
        ("optional", true, "~2.3.2")
    );
    assert_eq!(
        e.dependencies
            .iter()
            .filter(|d| d.name == "fsevents")
            .count(),
        1,
        "listed once, as optional"
    );
    assert!(e
        .dependencies
        .iter()
        .any(|d| d.name == "anymatch" && d.kind == "runtime"));
    // A debug tarball: one runtime dependency, an optional peer only in meta (not a dependency).
    let debug = find(e2e().join("npm-tarballs-a"), "debug-", ".tgz");
    let d = npm::extract_tarball(&debug).unwrap();
    assert_eq!(
        d.dependencies
            .iter()
            .map(|x| x.name.as_str())
            .collect::<Vec<_>>(),
        ["ms"]
    );
}

/// Reads POMs from the e2e Maven layout on disk.
struct Layout(PathBuf);

impl PomLoader for Layout {
    fn load<'a>(&'a self, gav: &'a Gav) -> LocalBoxFuture<'a, Result<Option<String>, String>> {
        Box::pin(async move { Ok(std::fs::read_to_string(self.0.join(gav.pom_path())).ok()) })
    }
}

#[tokio::test]
async fn jackson_databind_pom_with_parents_and_an_imported_bom() {
    let root = e2e().join("maven-upstream");
    let pom = std::fs::read_to_string(
        root.join("com/fasterxml/jackson/core/jackson-databind/2.17.2/jackson-databind-2.17.2.pom"),
    )
    .unwrap();
    let e = extract_pom(pom, &Layout(root)).await.unwrap();
    assert_eq!(
        (e.name.as_str(), e.version.as_str()),
        ("com.fasterxml.jackson.core:jackson-databind", "2.17.2")
    );
    let by_name: HashMap<&str, &orchard_server::db::NewDependency> = e
        .dependencies
        .iter()
        .map(|d| (d.name.as_str(), d))
        .collect();
    // Versions from properties inherited through jackson-base → jackson-bom → jackson-parent.
    let core = by_name["com.fasterxml.jackson.core:jackson-core"];
    assert_eq!(
        (core.requirement.as_str(), core.kind.as_str()),
        ("2.17.2", "compile")
    );
    let annotations = by_name["com.fasterxml.jackson.core:jackson-annotations"];
    assert_eq!(annotations.requirement, "2.17.2");
    // No version in the POM: managed by junit-bom, imported (scope import) in jackson-base.
    let jupiter = by_name["org.junit.jupiter:junit-jupiter"];
    assert!(jupiter.requirement.starts_with("5."), "{jupiter:?}");
    assert_eq!(jupiter.kind, "test");
    for d in &e.dependencies {
        assert!(!d.requirement.contains("${"), "uninterpolated: {d:?}");
        assert!(!d.requirement.is_empty(), "no version: {d:?}");
    }
}
