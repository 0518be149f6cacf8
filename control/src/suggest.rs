//! "Did you mean": the closest known name to a misspelt one (edit distance), for lint messages.

/// The candidate closest to `word`, when it is close enough to be a likely typo: at most one edit for short words,
/// about one edit per three characters for longer ones; case differences alone always count as close. `None` when
/// nothing is that close or `word` is itself a candidate.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let mut best: Option<(usize, &'a str)> = None;
    for c in candidates {
        if c == word {
            return None;
        }
        let d = if c.eq_ignore_ascii_case(word) { 0 } else { distance(word, c) };
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `: did you mean "x"?` for [`closest`], or nothing.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates).map_or(String::new(), |c| format!(": did you mean \"{c}\"?"))
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions), over characters.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, cell) in d.iter_mut().step_by(width).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v =
                (d[(i - 1) * width + j] + 1).min(d[i * width + j - 1] + 1).min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = v;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_and_nothing_far() {
        let fields = ["agents", "tools", "effect", "expires_at", "step_up"];
        assert_eq!(closest("agent", fields), Some("agents"));
        assert_eq!(closest("efect", fields), Some("effect"));
        assert_eq!(closest("expiers_at", fields), Some("expires_at"));
        assert_eq!(closest("Tools", fields), Some("tools"));
        assert_eq!(closest("stepup", fields), Some("step_up"));
        assert_eq!(closest("owner", fields), None);
        assert_eq!(closest("tools", fields), None);
        assert_eq!(did_you_mean("permit", ["allow", "deny", "step_up"]), "");
        assert_eq!(did_you_mean("alow", ["allow", "deny", "step_up"]), ": did you mean \"allow\"?");
    }

    #[test]
    fn distance_counts_edits() {
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("ab", "ba"), 1);
        assert_eq!(distance("café", "cafe"), 1);
    }
}
