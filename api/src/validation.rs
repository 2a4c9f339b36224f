//! Field-level validation errors shared by every CRD's `validate()`.
//!
//! Owns the [`FieldError`] type and small helpers that build it. It must not know about any
//! particular resource: each CRD module decides what is wrong with its own fields.

use std::fmt;

/// One thing wrong with one field of an object read from the API (external input).
///
/// `path` is the JSON path from the object root in the API's own spelling
/// (`spec.cidr`, `status.allocations[3].ordinal`), so an operator can find the field with
/// `kubectl get -o yaml` without knowing the Rust names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, from the object root.
    pub path: String,
    /// What is wrong, in words (includes the offending value where that helps).
    pub message: String,
}

impl FieldError {
    /// Builds an error for `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for FieldError {}

/// Joins a list of field errors into one line, for logs and events.
pub fn join(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Collects field errors; `finish` turns an empty collection into `Ok(())`.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(path, message));
    }

    pub(crate) fn extend(&mut self, other: Vec<FieldError>) {
        self.0.extend(other);
    }

    pub(crate) fn finish(self) -> Result<(), Vec<FieldError>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

/// Checks a Kubernetes object name (DNS-1123 subdomain: at most 253 characters of lower-case
/// alphanumerics, `-` and `.`, starting and ending with an alphanumeric).
pub(crate) fn check_dns_subdomain(errors: &mut Errors, path: &str, value: &str) {
    if value.is_empty() {
        errors.push(path, "must not be empty");
        return;
    }
    if value.len() > 253 {
        errors.push(
            path,
            format!("must be at most 253 characters, got {}", value.len()),
        );
    }
    let ok_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ends_ok = value
        .bytes()
        .next()
        .zip(value.bytes().last())
        .is_some_and(|(a, z)| a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric());
    if !ok_chars || !ends_ok {
        errors.push(
            path,
            format!(
                "{value:?} is not a valid name: lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit"
            ),
        );
    }
}

/// Validation of an object read from the API whose only object-level rule is a DNS-subdomain
/// name: the name, then the spec's own checks.
pub(crate) fn name_and_spec(
    name: Option<&str>,
    spec: Result<(), Vec<FieldError>>,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Errors::default();
    check_dns_subdomain(&mut errors, "metadata.name", name.unwrap_or_default());
    if let Err(e) = spec {
        errors.extend(e);
    }
    errors.finish()
}
