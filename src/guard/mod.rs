//! Guarding: pure decisions about each guarded object, and the reconciler that carries
//! them out against the cluster.

pub mod decide;
pub mod index;
