//! What the kinds spoken to over HTTP (WebHDFS, S3) share: errors as one line.

/// `text` with its whitespace runs, newlines included, made single spaces.
pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A request error with its whole chain of causes, on one line.
pub(super) fn one_line_error(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    one_line(&text)
}
