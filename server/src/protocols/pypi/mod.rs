//! PyPI: the simple repository API (PEP 503, 592, 629, 658, 691, 700, 714).

pub mod deps;
pub mod metadata;
pub mod model;
pub mod names;
pub mod negotiate;
pub mod parse;
pub mod render;
