//! Rate limits and cost budgets for SLLMP.
//!
//! This crate will hold the limit middleware: per-dimension request rates and spend budgets
//! (`feature`, `user_id`, `organization`, `team`, `meta:<key>`), checked atomically before
//! the provider call and charged from the pipeline's usage when the request completes, with
//! an in-memory store and a Redis store. It depends on `sllmp-pipeline` and `sllmp-core`,
//! never on axum, a provider or `sllmp-observe`.
//!
//! It is empty in this release: the configuration loader refuses `budget_constraints` rather
//! than accept limits it would not enforce.
