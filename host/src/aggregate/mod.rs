//! Aggregation windows: layer-4 statistics (and, later, layer-7 calls).

pub mod l4;
