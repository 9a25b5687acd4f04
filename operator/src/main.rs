//! The Orchard operator binary. This version ships the CRD (`crdgen`); the reconciler
//! (UpstreamSource → Postgres row + cache invalidation, leader election, status) is the
//! operator issue's next step, so the binary says so and exits non-zero rather than
//! pretending to reconcile.

fn main() {
    eprintln!("orchard-operator: the UpstreamSource reconciler is not built yet; `crdgen` prints the CRD");
    std::process::exit(1);
}
