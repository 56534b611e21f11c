//! The domain: types that cannot hold invalid values, the rules of each aggregate, the services
//! that apply them, and the port traits the adapters implement. Nothing here performs I/O.

pub mod deployment;
pub mod error;
pub mod events;
pub mod experiment;
pub mod ids;
pub mod model;
pub mod names;
pub mod pagination;
pub mod ports;
pub mod run;
pub mod run_query;
pub mod services;
pub mod tracking;
pub mod validation;

pub use error::{Error, Result};
pub use ids::{DeploymentId, ExperimentId, ModelId, RunId, TenantId};
