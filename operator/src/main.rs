//! The Orchard operator. The reconciler for `UpstreamSource` lands with its own issue;
//! until then this binary only reports that it has nothing to do.

fn main() {
    eprintln!("orchard-operator: the UpstreamSource reconciler is not built yet");
    std::process::exit(1);
}
