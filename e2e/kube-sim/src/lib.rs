//! In-memory Kubernetes API server for tests and the lab.
