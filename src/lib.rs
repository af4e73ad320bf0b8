//! secretguard: a Kubernetes operator that guards critical Secrets and ServiceAccount tokens.
//!
//! The binary (`src/main.rs`) is thin; everything it wires together lives here so tests
//! reach it. Modules in layers, each using only those before it (docs/architecture.md,
//! Layers):

// Leaves: types, keys, errors, settings.
pub mod api;

pub mod labels;

pub mod object_key;

pub mod error;

pub mod fault;

pub mod config;

// Infrastructure.
pub mod process_metrics;

pub mod metrics;

pub mod queue;

pub mod throttle;

pub mod transport;

pub mod telemetry;

pub mod leader;

pub mod alerts;

pub mod event_recorder;

pub mod restore_point;

pub mod cache;

// Guarding one Secret: pure decisions and state, then the steps of a reconcile.
pub mod guard;

// The runtime: watches, triggers, workers; the HTTP endpoints.
pub mod controller;

pub mod http;

pub use error::{Error, Result};
