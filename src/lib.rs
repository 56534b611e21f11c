//! aumos-mlops-lifecycle: a multi-tenant service for the life of machine-learning models.
//!
//! Hexagonal layout: `core` holds the domain and its ports, `adapters` implement the ports,
//! `api` is the HTTP edge, `startup` wires them together.

pub mod adapters;
pub mod api;
pub mod core;
pub mod settings;
pub mod startup;
pub mod telemetry;
pub mod workers;
