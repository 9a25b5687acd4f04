//! Parsing Maven repository paths into coordinates; anything else is refused.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Sha1,
    Md5,
    Sha256,
    Sha512,
}

/// Fed chunks (`Some`), then `None` for the lower-case hex digest.
pub type Hasher = Box<dyn FnMut(Option<&[u8]>) -> Option<String> + Send>;

impl Checksum {
    pub const ALL: [Checksum; 4] = [
        Checksum::Sha1,
        Checksum::Md5,
        Checksum::Sha256,
        Checksum::Sha512,
    ];

    pub fn ext(self) -> &'static str {
        match self {
            Checksum::Sha1 => "sha1",
            Checksum::Md5 => "md5",
            Checksum::Sha256 => "sha256",
            Checksum::Sha512 => "sha512",
        }
    }

    fn from_ext(ext: &str) -> Option<Checksum> {
        Checksum::ALL.into_iter().find(|c| c.ext() == ext)
    }

    /// Lower-case hex digest of `data` fed in pieces.
    pub fn hasher(self) -> Hasher {
        use sha2::Digest;
        macro_rules! h {
            ($t:ty) => {{
                let mut h = Some(<$t>::new());
                Box::new(move |chunk: Option<&[u8]>| match chunk {
                    Some(c) => {
                        h.as_mut().map(|h| h.update(c));
                        None
                    }
                    None => h.take().map(|h| hex::encode(h.finalize())),
                })
            }};
        }
        match self {
            Checksum::Sha1 => h!(sha1::Sha1),
            Checksum::Md5 => h!(md5::Md5),
            Checksum::Sha256 => h!(sha2::Sha256),
            Checksum::Sha512 => h!(sha2::Sha512),
        }
    }
}

/// What a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MavenPath {
    /// `…/maven-metadata.xml` at group, artifact or (SNAPSHOT) version level.
    Metadata {
        dir: String,
        checksum: Option<Checksum>,
    },
    /// A file of one version.
    File {
        group: String,
        artifact: String,
        version: String,
        file: String,
        checksum: Option<Checksum>,
    },
}

impl MavenPath {
    /// The repository-relative path of the main file (without a checksum extension).
    pub fn main_path(&self) -> String {
        match self {
            MavenPath::Metadata { dir, .. } => format!("{dir}/maven-metadata.xml"),
            MavenPath::File {
                group,
                artifact,
                version,
                file,
                ..
            } => {
                format!("{}/{artifact}/{version}/{file}", group.replace('.', "/"))
            }
        }
    }

    pub fn checksum(&self) -> Option<Checksum> {
        match self {
            MavenPath::Metadata { checksum, .. } | MavenPath::File { checksum, .. } => *checksum,
        }
    }
}

/// Whether one include/exclude pattern covers a coordinate. A pattern with a `:`
/// matches `groupId:artifactId` (`*` wildcards on each side); one without matches the
/// groupId, and `P.*` also covers the groupId `P` itself — so the README's `com.acme.*`
/// covers `com.acme:lib` and `com.acme.tools:cli` alike. A group-level path (no
/// artifact) is covered by `g:a` patterns only when the artifact side is `*`.
pub fn pattern_covers(pattern: &str, group: &str, artifact: Option<&str>) -> bool {
    use crate::sources::wildcard_match;
    let group_matches = |p: &str| {
        wildcard_match(p, group) || p.strip_suffix(".*").is_some_and(|base| base == group)
    };
    match pattern.split_once(':') {
        Some((pg, pa)) => {
            group_matches(pg) && artifact.map_or(pa == "*", |a| wildcard_match(pa, a))
        }
        None => group_matches(pattern),
    }
}

/// Whether `source` serves a coordinate.
pub fn source_serves(source: &crate::sources::Source, group: &str, artifact: Option<&str>) -> bool {
    source.allows_with(|p| pattern_covers(p, group, artifact))
}

/// Whether `source` serves a metadata directory (`a/b/c`): its segments can be read as
/// group `a.b` + artifact `c`, or as group `a.b.c` (group-level metadata, e.g. plugin
/// prefixes), or for a SNAPSHOT version directory as group + artifact + version. Every
/// reading must be served, so an exclude cannot be side-stepped through metadata.
pub fn source_serves_dir(source: &crate::sources::Source, dir: &str) -> bool {
    let parts: Vec<&str> = dir.split('/').collect();
    let readings: Vec<(String, Option<&str>)> = match parts.as_slice() {
        [.., artifact, version] if version.ends_with("-SNAPSHOT") && parts.len() >= 3 => {
            vec![(parts[..parts.len() - 2].join("."), Some(*artifact))]
        }
        [only] => vec![(only.to_string(), None)],
        [.., artifact] => vec![
            (parts[..parts.len() - 1].join("."), Some(*artifact)),
            (parts.join("."), None),
        ],
        [] => vec![],
    };
    !readings.is_empty() && readings.iter().all(|(g, a)| source_serves(source, g, *a))
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s != "."
        && s != ".."
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~'))
}

pub fn is_snapshot(version: &str) -> bool {
    version.ends_with("-SNAPSHOT")
}

/// Parses already percent-decoded segments.
pub fn parse(segments: &[String]) -> Result<MavenPath, String> {
    if segments.len() < 3 || segments.len() > 32 {
        return Err("not a Maven repository path".into());
    }
    if let Some(bad) = segments.iter().find(|s| !valid_segment(s)) {
        return Err(format!(
            "invalid path segment {:?}",
            bad.chars().take(60).collect::<String>()
        ));
    }
    let last = segments.last().expect("non-empty");
    let (name, checksum) = match last.rsplit_once('.') {
        Some((stem, ext)) if Checksum::from_ext(ext).is_some() => {
            (stem.to_string(), Checksum::from_ext(ext))
        }
        _ => (last.clone(), None),
    };
    let dirs = &segments[..segments.len() - 1];
    if name == "maven-metadata.xml" {
        return Ok(MavenPath::Metadata {
            dir: dirs.join("/"),
            checksum,
        });
    }
    if dirs.len() < 3 {
        return Err("a file path needs group/artifact/version/file".into());
    }
    let version = dirs[dirs.len() - 1].clone();
    let artifact = dirs[dirs.len() - 2].clone();
    let group = dirs[..dirs.len() - 2].join(".");
    let expected_prefix = match version.strip_suffix("-SNAPSHOT") {
        Some(base) => format!("{artifact}-{base}-"),
        None => format!("{artifact}-{version}"),
    };
    if !name.starts_with(&expected_prefix) || name.len() == expected_prefix.len() {
        return Err(format!(
            "{name:?} is not a file of {group}:{artifact}:{version}"
        ));
    }
    Ok(MavenPath::File {
        group,
        artifact,
        version,
        file: name,
        checksum,
    })
}

pub fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit('.').next().unwrap_or("");
    match ext {
        "jar" | "war" | "ear" | "aar" => "application/java-archive",
        "pom" | "xml" => "text/xml",
        "sha1" | "md5" | "sha256" | "sha512" | "asc" => "text/plain",
        "module" | "json" => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(include: &[&str], exclude: &[&str]) -> crate::sources::Source {
        let spec = crate::sources::SourceSpec {
            name: "s".into(),
            settings: crate::sources::SourceSettings {
                protocol: crate::sources::Protocol::Maven,
                url: "https://upstream.example/maven2/".into(),
                priority: 1,
                enabled: true,
                ttl: None,
                include: include.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
                file_hosts: vec![],
            },
            credentials: None,
        };
        crate::sources::Source {
            base: url::Url::parse(&spec.url).unwrap(),
            spec,
        }
    }

    #[test]
    fn the_readme_patterns_cover_files_and_metadata_alike() {
        // README: an internal source with include ["com.acme.*"], the public one excluding it
        let internal = source(&["com.acme.*"], &[]);
        let public = source(&[], &["com.acme.*"]);
        for (g, a) in [
            ("com.acme", "lib"),
            ("com.acme.tools", "cli"),
            ("com.acme.a.b", "x"),
        ] {
            assert!(source_serves(&internal, g, Some(a)), "{g}:{a}");
            assert!(!source_serves(&public, g, Some(a)), "{g}:{a}");
        }
        for dir in [
            "com/acme/lib",
            "com/acme/tools/cli",
            "com/acme/lib/1.0-SNAPSHOT",
        ] {
            assert!(source_serves_dir(&internal, dir), "{dir}");
            assert!(!source_serves_dir(&public, dir), "{dir}");
        }
        // `com/acme` may also be the artifact `com:acme`, which the internal source does not include
        assert!(
            !source_serves_dir(&public, "com/acme") && !source_serves_dir(&internal, "com/acme")
        );
        assert!(
            !source_serves(&public, "com.acme", None),
            "group-level metadata of com.acme"
        );
        assert!(
            source_serves(&public, "com.acmecorp", Some("lib"))
                && !source_serves(&internal, "com.acmecorp", Some("lib"))
        );
        assert!(source_serves(&public, "org.apache", Some("commons")));
        assert!(source_serves_dir(&public, "org/apache/maven/plugins"));
        // groupId:artifactId patterns
        let one = source(&[], &["com.acme:secret", "org.*:internal-*"]);
        assert!(
            !source_serves(&one, "com.acme", Some("secret"))
                && source_serves(&one, "com.acme", Some("public"))
        );
        assert!(!source_serves(&one, "org.x", Some("internal-api")));
        assert!(
            !source_serves_dir(&one, "com/acme/secret")
                && source_serves_dir(&one, "com/acme/public")
        );
        assert!(
            source_serves_dir(&one, "com/acme"),
            "group-level metadata is not one artifact"
        );
    }

    fn p(path: &str) -> Result<MavenPath, String> {
        parse(&path.split('/').map(str::to_string).collect::<Vec<_>>())
    }

    #[test]
    fn files_and_metadata() {
        let f = p("com/fasterxml/jackson/core/jackson-databind/2.17.0/jackson-databind-2.17.0.jar")
            .unwrap();
        assert_eq!(
            f,
            MavenPath::File {
                group: "com.fasterxml.jackson.core".into(),
                artifact: "jackson-databind".into(),
                version: "2.17.0".into(),
                file: "jackson-databind-2.17.0.jar".into(),
                checksum: None
            }
        );
        assert_eq!(
            f.main_path(),
            "com/fasterxml/jackson/core/jackson-databind/2.17.0/jackson-databind-2.17.0.jar"
        );
        let s = p("junit/junit/4.13.2/junit-4.13.2.pom.sha1").unwrap();
        assert_eq!(s.checksum(), Some(Checksum::Sha1));
        assert_eq!(s.main_path(), "junit/junit/4.13.2/junit-4.13.2.pom");
        assert!(matches!(
            p("org/acme/lib/1.0-SNAPSHOT/lib-1.0-20240101.120000-3.jar").unwrap(),
            MavenPath::File { .. }
        ));
        assert!(matches!(
            p("org/acme/lib/1.0-SNAPSHOT/lib-1.0-SNAPSHOT.jar").unwrap(),
            MavenPath::File { .. }
        ));
        let m = p("org/acme/lib/maven-metadata.xml.md5").unwrap();
        assert_eq!(
            m,
            MavenPath::Metadata {
                dir: "org/acme/lib".into(),
                checksum: Some(Checksum::Md5)
            }
        );
        assert!(matches!(
            p("org/acme/lib/1.0-SNAPSHOT/maven-metadata.xml").unwrap(),
            MavenPath::Metadata { .. }
        ));
    }

    #[test]
    fn refusals() {
        for bad in [
            "junit/junit/4.13.2/../../../etc/passwd",
            "junit/../junit/4.13.2/junit-4.13.2.jar",
            "junit/junit/4.13.2/other-4.13.2.jar",
            "junit/junit/4.13.2/junit-4.13.2",
            "junit/4.13.2/junit-4.13.2.jar",
            "junit/junit/4.13.2/.hidden",
            "junit/junit/4.13.2/junit 4.jar",
            "a/b",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn checksums() {
        let mut h = Checksum::Sha1.hasher();
        h(Some(b"ab"));
        h(Some(b"c"));
        assert_eq!(h(None).unwrap(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        let mut h = Checksum::Md5.hasher();
        h(Some(b"abc"));
        assert_eq!(h(None).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
