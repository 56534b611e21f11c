//! Adapters: the ports of `crate::core` implemented against real systems.

pub mod postgres;
pub mod sql;
pub mod sqlite;
