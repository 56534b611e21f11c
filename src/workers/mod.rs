//! Background loops. Each takes the shared shutdown signal and is safe to run on several
//! replicas at once.
