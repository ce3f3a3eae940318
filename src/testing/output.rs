//! The results of `orrery test` for people (a summary), and for CI (TAP
//! version 13, JUnit XML).

use std::fmt::Write;
use std::time::Duration;

use super::runner::{FileResult, Outcome};

/// Counts over every file.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed.
    pub failed: usize,
    /// Tests declared pending.
    pub pending: usize,
    /// Files that could not run.
    pub broken_files: usize,
}

/// The counts of `files`.
pub fn totals(files: &[FileResult]) -> Totals {
    let mut t = Totals::default();
    for f in files {
        if f.error.is_some() {
            t.broken_files += 1;
        }
        for test in &f.tests {
            match test.outcome {
                Outcome::Passed => t.passed += 1,
                Outcome::Failed(_) => t.failed += 1,
                Outcome::Pending => t.pending += 1,
            }
        }
    }
    t
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn indent(text: &str, pad: &str) -> String {
    text.lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One line per test, failures with their message, then the totals.
pub fn summary(files: &[FileResult]) -> String {
    let mut out = String::new();
    for f in files {
        let _ = writeln!(out, "{} ({})", f.path.display(), ms(f.duration));
        if let Some(e) = &f.error {
            let _ = writeln!(out, "  ERROR {}", indent(e, "        ").trim_start());
        }
        for t in &f.tests {
            match &t.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "  ok      {} ({})", t.name, ms(t.duration));
                }
                Outcome::Pending => {
                    let _ = writeln!(out, "  pending {}", t.name);
                }
                Outcome::Failed(m) => {
                    let _ = writeln!(out, "  FAIL    {} ({})", t.name, t.at);
                    let _ = writeln!(out, "{}", indent(m, "          "));
                }
            }
        }
    }
    let t = totals(files);
    let total: Duration = files.iter().map(|f| f.duration).sum();
    let _ = write!(
        out,
        "{} passed, {} failed, {} pending",
        t.passed, t.failed, t.pending
    );
    if t.broken_files > 0 {
        let _ = write!(
            out,
            ", {} that could not run",
            crate::text::plural(t.broken_files as u64, "file", "files")
        );
    }
    let _ = writeln!(
        out,
        " ({} in {})",
        crate::text::plural(files.len() as u64, "file", "files"),
        ms(total)
    );
    out
}

/// TAP version 13: one test point per test (and one per file that could not run).
pub fn tap(files: &[FileResult]) -> String {
    let count: usize = files
        .iter()
        .map(|f| f.tests.len() + usize::from(f.error.is_some()))
        .sum();
    let mut out = format!("TAP version 13\n1..{count}\n");
    let mut n = 0;
    for f in files {
        let file = f.path.display();
        if let Some(e) = &f.error {
            n += 1;
            let _ = writeln!(out, "not ok {n} - {file}");
            let _ = writeln!(out, "  ---\n  message: {}\n  ...", yaml_string(e));
        }
        for t in &f.tests {
            n += 1;
            let name = t.name.replace('#', "\\#");
            match &t.outcome {
                Outcome::Passed => {
                    let _ = writeln!(out, "ok {n} - {file}: {name}");
                }
                Outcome::Pending => {
                    let _ = writeln!(out, "ok {n} - {file}: {name} # SKIP pending");
                }
                Outcome::Failed(m) => {
                    let _ = writeln!(out, "not ok {n} - {file}: {name}");
                    let _ = writeln!(
                        out,
                        "  ---\n  at: {}\n  message: {}\n  ...",
                        yaml_string(&t.at),
                        yaml_string(m)
                    );
                }
            }
        }
    }
    out
}

fn yaml_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

/// JUnit XML: a `testsuite` per spec file, a `testcase` per test.
pub fn junit(files: &[FileResult]) -> String {
    let t = totals(files);
    let total: Duration = files.iter().map(|f| f.duration).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"orrery test\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
        t.passed + t.failed + t.pending,
        t.failed,
        t.broken_files,
        t.pending,
        total.as_secs_f64()
    );
    for f in files {
        let ft = totals(std::slice::from_ref(f));
        let file = xml(&f.path.display().to_string());
        let _ = writeln!(
            out,
            "  <testsuite name=\"{file}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">",
            f.tests.len(),
            ft.failed,
            ft.broken_files,
            ft.pending,
            f.duration.as_secs_f64()
        );
        if let Some(e) = &f.error {
            let _ = writeln!(
                out,
                "    <testcase name=\"(load)\" classname=\"{file}\"><error message=\"{}\">{}</error></testcase>",
                xml(e.lines().next().unwrap_or_default()),
                xml(e)
            );
        }
        for test in &f.tests {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{file}\" file=\"{}\" time=\"{:.3}\"",
                xml(&test.name),
                xml(&test.at),
                test.duration.as_secs_f64()
            );
            match &test.outcome {
                Outcome::Passed => out.push_str("/>\n"),
                Outcome::Pending => out.push_str("><skipped message=\"pending\"/></testcase>\n"),
                Outcome::Failed(m) => {
                    let _ = writeln!(
                        out,
                        "><failure message=\"{}\">{}</failure></testcase>",
                        xml(m.lines().next().unwrap_or_default()),
                        xml(m)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// `text` escaped for XML text and attributes; characters XML 1.0 cannot
/// hold are dropped.
fn xml(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&apos;"),
            '\n' => s.push_str("&#10;"),
            '\t' | '\r' => s.push(c),
            c if (c as u32) < 0x20 => {}
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escapes_markup_and_drops_control_characters() {
        assert_eq!(xml("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos;");
    }
}
