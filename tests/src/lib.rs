//! calsync end-to-end test support: scratch databases, worker child processes, a
//! private PostgreSQL cluster, and polling helpers, and
//! headless Chromium for the browser tests. The tests are in `tests/`.

pub mod browser;
pub mod harness;
