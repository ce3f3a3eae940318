//! Words for messages: counts with the right plural.

/// `1 message`, `2 messages` (`one` and `many` are the two forms).
pub fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {many}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_is_singular_and_the_rest_plural() {
        assert_eq!(super::plural(0u32, "agent", "agents"), "0 agents");
        assert_eq!(super::plural(1u32, "agent", "agents"), "1 agent");
        assert_eq!(super::plural(2u32, "agent", "agents"), "2 agents");
    }
}
