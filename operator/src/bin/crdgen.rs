//! Prints the `UpstreamSource` CRD as YAML: `cargo run -p orchard-operator --bin crdgen > manifests/crd.yaml`.

fn main() {
    print!("{}", orchard_operator::crd_yaml());
}
