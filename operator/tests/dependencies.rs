//! The operator links the shared core, not the server's HTTP stack: no HTTP server,
//! HTTP client or object storage crate is among its normal dependencies.

#[test]
fn the_operator_does_not_link_the_http_stack() {
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "orchard-operator",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains(&"orchard-core"), "{tree}");
    for forbidden in ["actix-web", "awc", "object_store", "orchard-server"] {
        assert!(
            !crates.contains(&forbidden),
            "the operator links {forbidden}:\n{tree}"
        );
    }
}
