//! Application services: one per aggregate, each applying the domain rules between the API and
//! the ports.

mod deployments;
mod events;
mod experiments;
mod models;
mod runs;

pub use deployments::{
    save_decision, user_actor, DeploymentService, DEPLOYMENT_ORDERING, HISTORY_ORDERING,
};
pub use events::{EventService, EVENT_ORDERING};
pub use experiments::{ExperimentService, EXPERIMENT_ORDERING};
pub use models::{ModelService, Promoted, MODEL_ORDERING};
pub use runs::RunService;
