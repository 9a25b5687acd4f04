//! Protocol adapters: what differs between registries. The shared flow is `proxy`.

pub mod npm;
pub mod pypi;
