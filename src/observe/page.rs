//! The run view page: one HTML file with its CSS, its JavaScript and the
//! journal it draws all inline (`page/view.html`, `view.css`, `view.js`,
//! embedded in the binary), so nothing is fetched from anywhere. The live
//! view serves it with an empty journal and streams entries to it; a report
//! carries the whole journal.

const HTML: &str = include_str!("page/view.html");
const CSS: &str = include_str!("page/view.css");
const JS: &str = include_str!("page/view.js");

/// The page of the live view: it reads the journal from `events` beside it.
pub fn live() -> String {
    render("live view", "live", "[]")
}

/// A self-contained page showing the journal `lines` (JSON objects, one
/// entry each), titled `title`.
pub fn report<S: AsRef<str>>(title: &str, lines: &[S]) -> String {
    let mut journal = String::from("[");
    for (i, line) in lines.iter().enumerate() {
        if i > 0 {
            journal.push_str(",\n");
        }
        journal.push_str(line.as_ref().trim());
    }
    journal.push(']');
    render(title, "report", &journal)
}

fn render(title: &str, mode: &str, journal: &str) -> String {
    // `<` only occurs inside JSON strings, where \u003c means the same: no
    // value can close the script element it sits in.
    let journal = journal.replace('<', "\\u003c");
    HTML.replace("{{TITLE}}", &escape_html(title))
        .replace("{{MODE}}", mode)
        .replace("{{CSS}}", CSS)
        .replace("{{JS}}", JS)
        .replace("{{JOURNAL}}", &journal)
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_value_cannot_close_the_script_that_holds_the_journal() {
        let page = super::report("t", &[r#"{"kind":"error","message":"</script><b>x"}"#]);
        assert!(!page.contains("</script><b>"), "{page}");
        assert!(page.contains(r#"\u003c/script>\u003cb>x"#));
    }

    #[test]
    fn the_live_page_has_no_journal_and_reads_events() {
        let page = super::live();
        assert!(page.contains(r#"data-mode="live""#));
        assert!(page.contains(r#"<script type="application/json" id="journal">[]</script>"#));
        assert!(page.contains("new EventSource(\"events\")"));
    }
}
