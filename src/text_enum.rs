//! [`text_enum!`]: enums whose variants each have one fixed text, the same
//! in the store, in JSON and on screen.

/// Declares an enum whose variants each have one fixed text: its stored and
/// JSON form (serde), `as_str`, `Display` (padding honoured) and comparison
/// with a `&str`, so a status or kind is typed in the code while every
/// reader outside sees the same words as before.
macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The text of this value, as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use crate::error::ErrorKind;
    use crate::store::{HostRole, HostState, MessageState, RunStatus};

    /// Each value's JSON is its text, quoted, and reads back as itself.
    fn round_trips<T>(values: &[T], texts: &[&str])
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
        T: std::fmt::Display,
    {
        for (v, text) in values.iter().zip(texts) {
            let json = serde_json::to_string(v).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(&serde_json::from_str::<T>(&json).unwrap(), v);
            assert_eq!(v.to_string(), *text);
        }
    }

    /// The words stored and shown before these were enums stay the same.
    #[test]
    fn stored_and_shown_texts_are_unchanged() {
        round_trips(
            &[MessageState::Pending, MessageState::Dead],
            &["pending", "dead"],
        );
        round_trips(
            &[
                RunStatus::Running,
                RunStatus::Stopping,
                RunStatus::Complete,
                RunStatus::Failed,
                RunStatus::Timeout,
                RunStatus::Interrupted,
            ],
            &[
                "running",
                "stopping",
                "complete",
                "failed",
                "timeout",
                "interrupted",
            ],
        );
        round_trips(&[HostRole::Owner, HostRole::Joiner], &["owner", "joiner"]);
        round_trips(
            &[HostState::Alive, HostState::Left, HostState::Lost],
            &["alive", "left", "lost"],
        );
        round_trips(
            &[
                ErrorKind::BadInput,
                ErrorKind::UnknownRole,
                ErrorKind::RoleDeleted,
                ErrorKind::Script,
                ErrorKind::Timeout,
                ErrorKind::Coordination,
                ErrorKind::SpawnLimit,
                ErrorKind::Failed,
                ErrorKind::LlmBudget,
                ErrorKind::Interrupted,
                ErrorKind::Undelivered,
            ],
            &[
                "bad_input",
                "unknown_role",
                "role_deleted",
                "script",
                "timeout",
                "coordination",
                "spawn_limit",
                "failed",
                "llm_budget",
                "interrupted",
                "undelivered",
            ],
        );
    }

    #[test]
    fn an_unknown_text_is_refused_and_padding_is_honoured() {
        assert!(serde_json::from_str::<RunStatus>("\"paused\"").is_err());
        assert_eq!(format!("[{:<6}]", HostState::Lost), "[lost  ]");
        assert!(MessageState::Dead == "dead" && MessageState::Dead != "pending");
    }
}
