//! Application services: one per aggregate, each applying the domain rules between the API and
//! the ports.

mod experiments;
mod runs;

pub use experiments::{ExperimentService, EXPERIMENT_ORDERING};
pub use runs::RunService;
