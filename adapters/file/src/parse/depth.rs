//! A linear guard against deeply nested flow collections, run before the YAML
//! parser (see [`too_deep`]).

/// Flow collections (`[..]`, `{..}`) may nest this deep.
pub(crate) const MAX_FLOW_DEPTH: usize = 64;

/// Finds the first `[` or `{` nested more than [`MAX_FLOW_DEPTH`] deep.
///
/// The YAML parser's cost grows with the product of flow depth and document
/// length, so a file of a few hundred kilobytes of `[` would take minutes to
/// reject. This scan is linear and approximate: it skips comments and quoted
/// scalars, and may count brackets inside plain or block scalars, which no
/// valid registry file nests anywhere near the limit.
pub(crate) fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut after_space = true;
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '#' if after_space => {
                chars.by_ref().find(|&(_, c)| c == '\n');
                continue;
            }
            '\'' => {
                chars.by_ref().find(|&(_, c)| c == '\'');
            }
            '"' => {
                let mut escaped = false;
                chars.by_ref().find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                });
            }
            '[' | '{' => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Some(i);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        after_space = c.is_whitespace();
    }
    None
}
