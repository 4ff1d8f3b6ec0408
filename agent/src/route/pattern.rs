//! Configured route patterns (`/users/{id}`, `/static/*`): parsed once, matched first-wins.
//!
//! Input: pattern strings from the configuration, then request paths. Output: the text of the
//! first pattern that matches a path. Paths are compared segment by segment after dropping empty
//! segments, as inference does, so `/users//7/` matches `/users/{id}`.

/// A pattern string that [`Patterns::parse`] rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid route pattern `{pattern}`: {reason}")]
pub struct PatternError {
    /// The pattern as given.
    pub pattern: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// One segment of a parsed pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PatternSegment {
    /// Matches exactly this (case-sensitive) segment.
    Literal(Box<str>),
    /// `{name}`: matches any one segment.
    Param,
    /// A final `*`: matches zero or more remaining segments.
    Rest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    text: Box<str>,
    segments: Box<[PatternSegment]>,
}

/// Configured route patterns like `/users/{id}` or `/static/*`; the first match wins.
///
/// Syntax: a pattern starts with `/`; each segment between slashes is a literal, `{name}` (any
/// one segment; the name is for humans only), or, as the last segment only, `*` (zero or more
/// remaining segments: `/static/*` matches `/static`, `/static/a.css` and `/static/a/b.css`).
/// `/` alone matches only the root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Patterns {
    patterns: Vec<Pattern>,
}

impl Patterns {
    /// Parses patterns, keeping their order (the first match wins).
    ///
    /// # Errors
    /// [`PatternError`] for the first pattern that does not start with `/`, has an empty segment
    /// (`/a//b`, `/a/`), has `*` anywhere but as the whole last segment, or has `{`/`}` anywhere
    /// but around a whole non-empty segment name.
    pub fn parse<I, S>(patterns: I) -> Result<Self, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| parse_one(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The text of the first pattern matching `path`, if any.
    #[must_use]
    pub fn matches(&self, path: &str) -> Option<&str> {
        self.patterns
            .iter()
            .find(|p| matches_segments(&p.segments, path))
            .map(|p| &*p.text)
    }

    /// How many patterns are configured.
    #[must_use]
    pub fn len(&self) -> usize {
        self.patterns.len()
    }

    /// Whether no pattern is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }
}

fn parse_one(text: &str) -> Result<Pattern, PatternError> {
    let error = |reason| PatternError {
        pattern: text.to_owned(),
        reason,
    };
    let Some(rest) = text.strip_prefix('/') else {
        return Err(error("does not start with `/`"));
    };
    let mut segments = Vec::new();
    if !rest.is_empty() {
        let parts: Vec<&str> = rest.split('/').collect();
        for (index, part) in parts.iter().enumerate() {
            let last = index + 1 == parts.len();
            segments.push(parse_segment(part, last).map_err(error)?);
        }
    }
    Ok(Pattern {
        text: text.into(),
        segments: segments.into(),
    })
}

fn parse_segment(part: &str, last: bool) -> Result<PatternSegment, &'static str> {
    if part.is_empty() {
        return Err("empty segment");
    }
    if part == "*" {
        return if last {
            Ok(PatternSegment::Rest)
        } else {
            Err("`*` is allowed only as the last segment")
        };
    }
    if part.contains('*') {
        return Err("`*` must be a whole segment");
    }
    if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        return if name.is_empty() || name.contains(['{', '}']) {
            Err("a `{name}` parameter needs a non-empty name without braces")
        } else {
            Ok(PatternSegment::Param)
        };
    }
    if part.contains(['{', '}']) {
        return Err("`{name}` must be a whole segment");
    }
    Ok(PatternSegment::Literal(part.into()))
}

fn matches_segments(pattern: &[PatternSegment], path: &str) -> bool {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    for p in pattern {
        match p {
            PatternSegment::Rest => return true,
            PatternSegment::Param => {
                if segments.next().is_none() {
                    return false;
                }
            }
            PatternSegment::Literal(literal) => {
                if segments.next() != Some(&**literal) {
                    return false;
                }
            }
        }
    }
    segments.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(patterns: &[&str]) -> Patterns {
        Patterns::parse(patterns).expect("valid patterns")
    }

    fn reason(pattern: &str) -> &'static str {
        Patterns::parse([pattern]).expect_err(pattern).reason
    }

    #[test]
    fn params_match_one_segment() {
        let p = parse(&["/api/{version}/users/{id}"]);
        assert_eq!(
            p.matches("/api/v2/users/7"),
            Some("/api/{version}/users/{id}")
        );
        assert_eq!(
            p.matches("/api/v2/users/7/"),
            Some("/api/{version}/users/{id}")
        );
        assert_eq!(p.matches("/api/v2/users"), None);
        assert_eq!(p.matches("/api/v2/users/7/x"), None);
        assert_eq!(p.matches("/api/v2/groups/7"), None);
    }

    #[test]
    fn final_star_matches_zero_or_more_segments() {
        let p = parse(&["/static/*"]);
        assert_eq!(p.matches("/static/a/b.css"), Some("/static/*"));
        assert_eq!(p.matches("/static/a.css"), Some("/static/*"));
        assert_eq!(p.matches("/static"), Some("/static/*"));
        assert_eq!(p.matches("/staticx/a"), None);
        assert_eq!(parse(&["/*"]).matches("/"), Some("/*"));
    }

    #[test]
    fn root_pattern_matches_only_root() {
        let p = parse(&["/"]);
        assert_eq!(p.matches("/"), Some("/"));
        assert_eq!(p.matches(""), Some("/"));
        assert_eq!(p.matches("/a"), None);
    }

    #[test]
    fn literals_are_case_sensitive() {
        assert_eq!(parse(&["/Users"]).matches("/users"), None);
    }

    #[test]
    fn first_match_wins() {
        let p = parse(&["/users/me", "/users/{id}", "/*"]);
        assert_eq!(p.matches("/users/me"), Some("/users/me"));
        assert_eq!(p.matches("/users/7"), Some("/users/{id}"));
        assert_eq!(p.matches("/other"), Some("/*"));
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn no_patterns_match_nothing() {
        let p = Patterns::parse(Vec::<String>::new()).expect("empty is valid");
        assert!(p.is_empty());
        assert_eq!(p.matches("/"), None);
    }

    #[test]
    fn parse_errors_name_the_pattern_and_reason() {
        assert_eq!(reason(""), "does not start with `/`");
        assert_eq!(reason("users/{id}"), "does not start with `/`");
        assert_eq!(reason("/a//b"), "empty segment");
        assert_eq!(reason("/a/"), "empty segment");
        assert_eq!(reason("/a/*/b"), "`*` is allowed only as the last segment");
        assert_eq!(reason("/a*"), "`*` must be a whole segment");
        assert_eq!(
            reason("/a/{}"),
            "a `{name}` parameter needs a non-empty name without braces"
        );
        assert_eq!(reason("/a/x{id}"), "`{name}` must be a whole segment");
        assert_eq!(reason("/a/{id"), "`{name}` must be a whole segment");

        let e = Patterns::parse(["/ok", "/bad//"]).expect_err("second is invalid");
        assert_eq!(e.pattern, "/bad//");
        assert_eq!(
            e.to_string(),
            "invalid route pattern `/bad//`: empty segment"
        );
    }
}
