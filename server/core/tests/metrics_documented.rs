//! Every metric the registry defines is named in docs/architecture.md ("Metrics").

#[test]
fn every_metric_is_documented() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let source = std::fs::read_to_string(root.join("src/metrics.rs")).unwrap();
    let docs = std::fs::read_to_string(root.join("../../docs/architecture.md")).unwrap();
    let names: Vec<&str> = source
        .split('"')
        .filter(|s| {
            s.starts_with("orchard_") && s.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
        .collect();
    assert!(names.len() > 30, "{names:?}");
    let missing: Vec<&&str> = names.iter().filter(|n| !docs.contains(**n)).collect();
    assert!(
        missing.is_empty(),
        "not in docs/architecture.md: {missing:?}"
    );
}
