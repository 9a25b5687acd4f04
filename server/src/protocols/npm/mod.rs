//! npm: packuments (full and abbreviated), versions, tarballs, scoped names.

pub mod deps;
pub mod handlers;
pub mod names;
pub mod packument;
