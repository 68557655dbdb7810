//! Helpers shared by the process-level and interop tests.
