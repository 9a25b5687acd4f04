//! PEP 658 metadata for wheels the upstream offers none for: once a wheel is stored,
//! its `*.dist-info/METADATA` is extracted (on the blocking pool), stored as an
//! artifact of its own and mapped to `<wheel>.metadata`; pages advertise it from then on.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;

use crate::cache::Category;
use crate::db::{now_unix, Artifact, CachedUrl};
use crate::proxy::artifact::Committed;
use crate::proxy::Flow;
use crate::sources::Source;

/// METADATA files larger than this are not extracted.
const MAX_METADATA_BYTES: u64 = 16 * 1024 * 1024;

/// Reads the wheel's `{name}-{version}.dist-info/METADATA` (the only top-level
/// `.dist-info` directory a valid wheel has).
pub fn extract_from_wheel(path: &std::path::Path) -> Result<Vec<u8>, String> {
    crate::deps::archive::check_zip_directory(path)?;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| format!("not a zip archive: {e}"))?;
    let names: Vec<String> = zip
        .file_names()
        .filter(|n| {
            let mut parts = n.split('/');
            matches!((parts.next(), parts.next(), parts.next()), (Some(d), Some("METADATA"), None) if d.ends_with(".dist-info"))
        })
        .map(str::to_string)
        .collect();
    let [name] = names.as_slice() else {
        return Err(format!(
            "expected one .dist-info/METADATA, found {}",
            names.len()
        ));
    };
    let entry = zip.by_name(name).map_err(|e| e.to_string())?;
    if entry.size() > MAX_METADATA_BYTES {
        return Err("METADATA is too large".into());
    }
    let mut out = Vec::with_capacity(entry.size() as usize);
    entry
        .take(MAX_METADATA_BYTES)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Extracts and stores the metadata of a committed wheel. Failures are logged: the
/// page simply does not advertise metadata for that file.
pub async fn extract_and_store(
    state: Flow,
    source: Arc<Source>,
    project: String,
    filename: String,
    wheel: Committed,
) {
    if let Err(e) = try_extract(&state, &source, &project, &filename, &wheel).await {
        tracing::warn!(upstream.source = source.name(), package.file = %filename, error = %e, "no metadata extracted from wheel");
    }
}

async fn try_extract(
    state: &Flow,
    source: &Source,
    project: &str,
    filename: &str,
    wheel: &Committed,
) -> Result<(), String> {
    let repo = state.db().ok_or("database not ready")?.clone();
    let path = format!("{project}/{filename}.metadata");
    if repo
        .get_cached_url_with_artifact("pypi", source.name(), &path)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let tmp = state
        .storage
        .to_temp_file(&wheel.sha256)
        .await
        .map_err(|e| e.to_string())?;
    let local = tmp.path().to_path_buf();
    let metadata = state
        .blocking
        .run(move || extract_from_wheel(&local))
        .await
        .map_err(|e| e.to_string())??;
    drop(tmp);
    let stored = state
        .storage
        .put_stream(
            futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(metadata)) }),
            &Default::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let art = Artifact {
        sha256: stored.sha256.clone(),
        size: stored.size as i64,
        content_type: "application/octet-stream".into(),
        created_at: now_unix(),
    };
    repo.get_or_create_artifact(&art)
        .await
        .map_err(|e| e.to_string())?;
    repo.upsert_cached_url(&CachedUrl {
        protocol: "pypi".into(),
        source: source.name().to_string(),
        path,
        artifact_sha256: stored.sha256,
        upstream_url: format!("orchard:extracted-from:{}", wheel.sha256),
        created_at: now_unix(),
    })
    .await
    .map_err(|e| e.to_string())?;
    // Pages render the metadata list; make them see the new entry.
    let key = metadata_list_key(state, source.name(), project).await;
    state.cache.delete(&key).await;
    Ok(())
}

/// Cache key of the project's cached-metadata list (dropped when a wheel's metadata is
/// extracted).
pub(crate) async fn metadata_list_key(state: &Flow, source: &str, project: &str) -> String {
    state
        .cache
        .source_key(
            Category::PackageIndex,
            "pypi",
            source,
            &format!("metadata/{project}"),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(entries: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut z = zip::ZipWriter::new(f.reopen().unwrap());
        for (name, data) in entries {
            z.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
        f
    }

    #[test]
    fn finds_the_one_metadata_file() {
        let w = wheel(&[
            ("demo/__init__.py", b""),
            (
                "demo-1.0.dist-info/METADATA",
                b"Metadata-Version: 2.1\nName: demo\n",
            ),
            ("demo-1.0.dist-info/RECORD", b""),
            ("demo/vendored/x.dist-info/METADATA", b"nested, ignored"),
        ]);
        assert_eq!(
            extract_from_wheel(w.path()).unwrap(),
            b"Metadata-Version: 2.1\nName: demo\n"
        );
    }

    #[test]
    fn refuses_ambiguous_or_missing_metadata() {
        let w = wheel(&[
            ("a-1.dist-info/METADATA", b"x"),
            ("b-1.dist-info/METADATA", b"y"),
        ]);
        assert!(extract_from_wheel(w.path()).is_err());
        let w = wheel(&[("a/__init__.py", b"")]);
        assert!(extract_from_wheel(w.path()).is_err());
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"not a zip").unwrap();
        assert!(extract_from_wheel(f.path()).is_err());
    }
}
