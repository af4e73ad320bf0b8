//! Guarding one Secret at a time. Files in reading order; each uses only files above it
//! (docs/architecture.md, Layers):
//!
//! Pure decisions and state (no I/O):
//! - `spec`: what a guard's spec means (targets, kinds, checks the schema cannot make)
//! - `index`: which guard guards which Secret
//! - `decide`: what to do, given what is observed (types; `token`, `secret`; table tests)
//! - `observe`: Kubernetes objects -> the views decisions take
//! - `outcome`: what carrying out actions achieved, typed failures, incident outcomes
//! - `state`: what is remembered between reconciles
//! - `status::build`: a guard's status from what is remembered
//!
//! Shared by the steps:
//! - `context`: client, settings, caches, index, records, queue, reporters
//!
//! The steps of one reconcile, in order:
//! - `load`: gather what the decision needs (caches first)
//! - `verify`: read-only checks around a restore (owners, TokenReview)
//! - `act`: carry out the actions
//! - `record`: update what is remembered, say what is new
//! - `status`: request and write a guard's status (debounced)
//! - `report`: metrics, alerts and Events about what is new
//! - `retention`: unguarding, and restore points of deleted namespaces
//! - `migrate`: restore points of an earlier format rewritten in this one, at a bounded pace
//! - `reconcile`: the pipeline, load -> decide -> act -> record -> report

// Pure.
pub mod spec;

pub mod index;

pub mod decide;

pub mod observe;

pub mod breaker;
pub mod outcome;

pub mod state;

// Shared by the steps.
pub mod context;

// The steps.
pub mod load;

pub mod verify;

pub mod act;

pub mod record;

pub mod status;

pub mod report;

pub mod retention;

pub mod migrate;

pub mod reconcile;

#[cfg(test)]
pub(crate) mod fixtures;
