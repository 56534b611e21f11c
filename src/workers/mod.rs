//! Background loops. Each takes the shared shutdown token and is safe to run on several
//! replicas at once.

pub mod outbox_relay;
