//! Property tests of the parsers that take client and upstream input: names, Maven
//! paths, path segments, `Range`, file URLs and storage keys. For any input: no panic;
//! nothing that is accepted can escape its place (no `..`, no separators, keys only
//! from digests); round trips hold.

use orchard_server::protocols::decode_segment;
use orchard_server::protocols::maven::coords::{self, MavenPath};
use orchard_server::protocols::npm::names::PackageName;
use orchard_server::protocols::pypi::names;
use orchard_server::proxy::response::{parse_range, RangeRequest};
use orchard_server::storage::ArtifactStore;
use orchard_server::{file_url, sources};
use proptest::prelude::*;

/// Strings biased towards the characters that matter in paths and names.
fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9._~+%/@:\\\\ -]{0,40}",
        "(\\.\\.|%2e%2e|%2F|/|\\\\|\\.|[a-z]{1,5}|%00|%2f|@|-){0,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn pypi_names_normalise_idempotently(name in hostile_text()) {
        let n = names::normalize(&name);
        prop_assert_eq!(names::normalize(&n), n.clone());
        if names::is_valid_project_name(&name) {
            prop_assert!(!n.contains('/') && !n.contains("..") && !n.is_empty());
        }
        let _ = names::is_valid_filename(&name);
        let _ = names::version_of_filename(&name);
        let _ = names::project_of_filename(&name);
    }

    #[test]
    fn valid_pypi_file_names_are_one_plain_segment(name in hostile_text()) {
        if names::is_valid_filename(&name) {
            prop_assert!(!name.contains('/') && !name.contains('\\') && name != "." && name != "..");
            prop_assert!(!name.starts_with('.'));
        }
    }

    #[test]
    fn npm_names_round_trip(name in hostile_text()) {
        if let Ok(p) = PackageName::parse(&name) {
            prop_assert_eq!(p.full(), name.clone());
            let again = PackageName::parse(&p.full()).unwrap();
            prop_assert_eq!(again.full(), name.clone());
            let full = p.full();
            let parts: Vec<&str> = full.trim_start_matches('@').split('/').collect();
            prop_assert!(parts.len() <= 2);
            for part in parts {
                prop_assert!(!part.is_empty() && part != "." && part != "..", "{:?}", full);
            }
        }
    }

    #[test]
    fn decoded_segments_have_no_control_characters(seg in hostile_text()) {
        if let Ok(s) = decode_segment(&seg) {
            prop_assert!(!s.chars().any(|c| c.is_control()));
        }
    }

    #[test]
    fn maven_paths_never_escape_and_round_trip(segs in prop::collection::vec(hostile_text(), 0..8)) {
        let decoded: Vec<String> = segs.iter().filter_map(|s| decode_segment(s).ok()).collect();
        if let Ok(p) = coords::parse(&decoded) {
            let main = p.main_path();
            for part in main.split('/') {
                prop_assert!(!part.is_empty() && part != "." && part != "..", "{}", main);
                prop_assert!(!part.contains('\\') && !part.contains('\0'));
            }
            // the main path parses back to the same coordinate (without the checksum)
            let back: Vec<String> = main.split('/').map(str::to_string).collect();
            let again = coords::parse(&back).unwrap();
            prop_assert_eq!(again.main_path(), main);
            if let MavenPath::File { artifact, version, file, .. } = &p {
                let prefix = format!("{}-", artifact);
                prop_assert!(file.starts_with(&prefix) || coords::is_snapshot(version));
            }
        }
    }

    #[test]
    fn ranges_stay_inside_the_object(value in hostile_text(), size in 0u64..10_000_000) {
        match parse_range(Some(&value), size) {
            RangeRequest::Part(r) => prop_assert!(r.start < r.end && r.end <= size, "{:?} {} {:?}", value, size, r),
            RangeRequest::Full | RangeRequest::Unsatisfiable => {}
        }
    }

    #[test]
    fn well_formed_ranges_are_honoured(start in 0u64..1000, len in 1u64..1000, size in 1u64..3000) {
        let header = format!("bytes={start}-{}", start + len - 1);
        match parse_range(Some(&header), size) {
            RangeRequest::Part(r) => prop_assert_eq!(r, start..(start + len).min(size)),
            RangeRequest::Unsatisfiable => prop_assert!(start >= size),
            RangeRequest::Full => prop_assert!(false, "{} ignored", header),
        }
    }

    #[test]
    fn storage_keys_come_only_from_digests(input in hostile_text()) {
        if let Ok(key) = ArtifactStore::key(&input) {
            let k = key.to_string();
            prop_assert!(k.starts_with("sha256/") && !k.contains(".."));
            prop_assert_eq!(k.split('/').count(), 3);
        }
    }

    #[test]
    fn redacted_urls_carry_no_credentials_or_query(user in "[a-z]{1,8}", secret in "[A-Za-z0-9]{8,20}", path in "[a-z/]{0,20}", q in "[a-z=&]{0,20}") {
        let raw = format!("https://{user}:{secret}@upstream.example/{path}?token={secret}&{q}");
        let shown = file_url::redact(&raw);
        prop_assert!(!shown.contains(&secret), "{}", shown);
        let _ = file_url::redact(&user); // not a URL: no panic
    }

    #[test]
    fn file_host_entries_never_panic(entry in hostile_text()) {
        if let Ok((host, _)) = sources::parse_file_host(&entry) {
            prop_assert!(!host.contains('/') && !host.contains('@'));
        }
    }
}
