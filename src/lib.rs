//! secretguard: a Kubernetes operator that guards critical Secrets and ServiceAccount tokens.
//!
//! The binary (`src/main.rs`) is thin; everything it wires together lives here so tests reach it.

pub mod alerts;
pub mod api;
pub mod controller;
pub mod error;
pub mod fault;
pub mod guard;
pub mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
pub mod queue;
pub mod restore_point;
pub mod telemetry;

pub use error::{Error, Result};
