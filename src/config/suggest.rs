//! "Did you mean ...?" for misspelt keys and names, as cargo and Traefik offer: the
//! closest known candidate by edit distance, when it is close enough to be a typo.

/// The candidate closest to `typed`, if within a third of its length in edits (at
/// least one), as cargo does; ties go to the first.
pub(crate) fn closest<'c>(typed: &str, candidates: impl IntoIterator<Item = &'c str>) -> Option<&'c str> {
    let limit = (typed.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != typed)
        .map(|c| (strsim::damerau_levenshtein(typed, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// ` (did you mean `x`?)`, or nothing.
pub(crate) fn did_you_mean<'c>(typed: &str, candidates: impl IntoIterator<Item = &'c str>, quote: bool) -> String {
    match closest(typed, candidates) {
        Some(c) if quote => format!(" (did you mean {c:?}?)"),
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_only_near_misses() {
        let keys = ["drain_timeout", "listen", "workers", "access_log"];
        assert_eq!(closest("drain_timout", keys), Some("drain_timeout"));
        assert_eq!(closest("listn", keys), Some("listen"));
        assert_eq!(closest("wrokers", keys), Some("workers"), "a transposition is one edit");
        assert_eq!(closest("bogus", keys), None);
        assert_eq!(closest("x", ["y"]), Some("y"), "one edit is always allowed");
        assert_eq!(did_you_mean("shop-v3", ["shop-v1", "other"], true), " (did you mean \"shop-v1\"?)");
    }
}
