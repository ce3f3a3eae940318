//! Bounds on what scripts make the host keep: the names they choose, and the
//! counts and bytes of the task's quotas ([`crate::config::Quotas`]).
//!
//! Each refusal is an error naming the call's subject, the quota and the
//! setting that raises it, so a script author knows what to change.

use crate::error::{Error, Result};

/// Longest name a script may give a message type, recipient, metric,
/// trigger or spawn role (bytes).
pub const MAX_NAME_BYTES: usize = 512;

/// Refuses a name (`what` says whose, as `message type`) that is empty,
/// longer than [`MAX_NAME_BYTES`] or holds control characters.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES || name.chars().any(char::is_control) {
        let shown: String = name.chars().take(40).collect();
        return Err(Error::bad_input(
            format!(
                "{what} {shown:?}{}",
                if shown.len() < name.len() { "…" } else { "" }
            ),
            format!("must be 1 to {MAX_NAME_BYTES} bytes with no control characters"),
        ));
    }
    Ok(())
}

/// The error of a call on `subject` refused because the quota `setting`
/// (`limit`, counted in `unit`) is reached; `detail` says what is counted.
pub fn exceeded(
    subject: impl Into<String>,
    setting: &str,
    limit: usize,
    unit: &str,
    detail: &str,
) -> Error {
    Error::bad_input(
        subject,
        format!(
            "quota {setting} ({limit} {unit}) reached: {detail} (raise the setting {setting} in orrery.toml or ORRERY_{})",
            setting.to_ascii_uppercase()
        ),
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_bounded_printable_text() {
        assert!(super::check_name("message type", "job").is_ok());
        assert!(super::check_name("message type", "").is_err());
        assert!(super::check_name("message type", "a\nb").is_err());
        let long = "x".repeat(super::MAX_NAME_BYTES + 1);
        let e = super::check_name("message type", &long).unwrap_err();
        assert!(
            e.to_string().len() < 200,
            "the name is not echoed whole: {e}"
        );
    }

    #[test]
    fn a_quota_error_names_the_setting() {
        let e = super::exceeded(
            "bus.send to 'b'",
            "max_queue_depth",
            3,
            "messages",
            "queue 'b' holds 3",
        );
        assert_eq!(
            e.to_string(),
            "bus.send to 'b': quota max_queue_depth (3 messages) reached: queue 'b' holds 3 \
             (raise the setting max_queue_depth in orrery.toml or ORRERY_MAX_QUEUE_DEPTH)"
        );
    }
}
