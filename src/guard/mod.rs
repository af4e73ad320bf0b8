//! Guarding: pure decisions about each guarded object, and the reconciler that carries
//! them out against the cluster.
//!
//! - `decide`: what to do, given what is observed (DESIGN.md §4 as code; table-tested)
//! - `observe`: Kubernetes objects → the views decisions take
//! - `index`: which guard guards which Secret
//! - `reconcile`: one guarded Secret, end to end (I/O at the edges)
//! - `incident`: Events, log lines and lastIncident
//! - `status`: the guard's status

pub mod decide;
pub mod incident;
pub mod index;
pub mod observe;
pub mod reconcile;
pub mod status;
