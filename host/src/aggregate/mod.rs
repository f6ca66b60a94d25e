//! Aggregation windows: layer-4 statistics and layer-7 calls.

mod keyed;
pub mod l4;
pub mod l7;
pub mod sketch;
