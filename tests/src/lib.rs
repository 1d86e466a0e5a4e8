//! calsync end-to-end test support: scratch databases, worker child processes, a
//! private PostgreSQL cluster, and polling helpers. The tests are in `tests/`.

pub mod commands;
pub mod harness;
