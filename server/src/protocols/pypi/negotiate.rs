//! PEP 691 content negotiation over the `Accept` header (with `q=` weights).

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Representation {
    TextHtml,
    JsonV1,
    HtmlV1,
}

impl Representation {
    pub fn content_type(self) -> &'static str {
        match self {
            Representation::TextHtml => "text/html; charset=utf-8",
            Representation::JsonV1 => "application/vnd.pypi.simple.v1+json",
            Representation::HtmlV1 => "application/vnd.pypi.simple.v1+html",
        }
    }

    pub fn cache_suffix(self) -> &'static str {
        match self {
            Representation::TextHtml => "text-html",
            Representation::JsonV1 => "v1-json",
            Representation::HtmlV1 => "v1-html",
        }
    }

    pub fn is_json(self) -> bool {
        self == Representation::JsonV1
    }

    /// The media types that name this representation exactly.
    fn names(self) -> &'static [&'static str] {
        match self {
            Representation::TextHtml => &["text/html"],
            Representation::JsonV1 => &[
                "application/vnd.pypi.simple.v1+json",
                "application/vnd.pypi.simple.latest+json",
            ],
            Representation::HtmlV1 => &[
                "application/vnd.pypi.simple.v1+html",
                "application/vnd.pypi.simple.latest+html",
            ],
        }
    }
}

/// Server preference among equally good matches: plain HTML first, so that `*/*` (or no
/// header at all) gets what browsers and old clients expect.
const PREFERENCE: [Representation; 3] = [
    Representation::TextHtml,
    Representation::JsonV1,
    Representation::HtmlV1,
];

/// The representation to send, or `None` when nothing the client accepts is on offer
/// (→ 406).
pub fn negotiate(accept: Option<&str>) -> Option<Representation> {
    let Some(accept) = accept.map(str::trim).filter(|a| !a.is_empty()) else {
        return Some(Representation::TextHtml);
    };
    // (media range, q)
    let mut ranges: Vec<(String, f32)> = Vec::new();
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let media = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        let mut q = 1.0f32;
        for p in pieces {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                        .unwrap_or(0.0);
                }
            }
        }
        ranges.push((media, q));
    }
    let mut best: Option<(f32, u8, usize, Representation)> = None;
    for (pref, rep) in PREFERENCE.iter().enumerate() {
        // The most specific range that matches decides this representation's q.
        let mut matched: Option<(u8, f32)> = None;
        for (media, q) in &ranges {
            let specificity = if rep.names().contains(&media.as_str()) {
                2
            } else if media.ends_with("/*")
                && rep
                    .names()
                    .iter()
                    .any(|n| n.starts_with(&media[..media.len() - 1]))
            {
                1
            } else if media == "*/*" {
                0
            } else {
                continue;
            };
            if matched.is_none_or(|(s, _)| specificity > s) {
                matched = Some((specificity, *q));
            }
        }
        let Some((specificity, q)) = matched else {
            continue;
        };
        if q <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((bq, bs, bp, _)) => {
                q > bq || (q == bq && (specificity > bs || (specificity == bs && pref < bp)))
            }
        };
        if better {
            best = Some((q, specificity, pref, *rep));
        }
    }
    best.map(|(_, _, _, r)| r)
}

#[cfg(test)]
mod tests {
    use super::Representation::*;
    use super::*;

    #[test]
    fn negotiation() {
        assert_eq!(negotiate(None), Some(TextHtml));
        assert_eq!(negotiate(Some("*/*")), Some(TextHtml));
        // pip's header
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01")),
            Some(JsonV1)
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.v1+html")),
            Some(HtmlV1)
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.latest+json")),
            Some(JsonV1)
        );
        assert_eq!(
            negotiate(Some(
                "text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.9"
            )),
            Some(JsonV1)
        );
        assert_eq!(negotiate(Some("application/*")), Some(JsonV1));
        assert_eq!(negotiate(Some("application/json")), None);
        assert_eq!(negotiate(Some("image/png")), None);
        assert_eq!(negotiate(Some("text/html;q=0")), None);
        assert_eq!(negotiate(Some("*/*;q=0.1, text/html;q=0")), Some(JsonV1));
        assert_eq!(
            negotiate(Some("text/html;q=abc")),
            None,
            "a malformed weight counts as 0"
        );
    }
}
