//! npm: packuments (full and abbreviated), versions, tarballs, scoped names.

pub mod deps;
pub mod names;
pub mod packument;
