//! Near-miss suggestions for keys and names in configuration errors.

/// The candidate closest to `word` (case-insensitive edit distance), if
/// close enough to be a likely typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(&w, &c.to_ascii_lowercase()), c))
        .filter(|&(d, c)| d > 0 && d <= (c.len() / 3).max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// serde's "unknown field `X`, expected one of `A`, `B`" (or "unknown
/// variant"), with "did you mean `A`?" added when one is close.
pub fn explain_serde_error(message: &str) -> String {
    let Some(start) = message.find("unknown field `").or_else(|| message.find("unknown variant `")) else {
        return message.to_string();
    };
    let rest = &message[start..];
    let quoted: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((unknown, expected)) = quoted.split_first() else { return message.to_string() };
    match closest(unknown, expected.iter().copied()) {
        Some(near) => format!("{message} (did you mean `{near}`?)"),
        None => message.to_string(),
    }
}
