//! Finding keys and values of a TOML document by their dotted path, so that an error about
//! `grid.mixture_ratio[2]` can say `configs/dcpt.toml:14:9`.

use toml::de::{DeTable, DeValue};

/// A parsed document that can answer "where is `grid.mixture_ratio[2]`?".
pub struct Locator<'a> {
    text: &'a str,
    root: Option<toml::Spanned<DeTable<'a>>>,
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// Splits `a.b[2].c` into steps. Keys with dots must not be quoted in our schema, so this is enough.
pub fn parse_path(path: &str) -> Vec<Step> {
    let mut steps = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                steps.push(Step::Key(rest[..i].to_string()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let end = stripped.find(']').unwrap_or(stripped.len());
                if let Ok(n) = stripped[..end].parse() {
                    steps.push(Step::Index(n));
                }
                rest = stripped.get(end + 1..).unwrap_or("");
            }
        } else if !rest.is_empty() {
            steps.push(Step::Key(rest.to_string()));
        }
    }
    steps
}

impl<'a> Locator<'a> {
    /// Parses `text`; a document that does not parse locates nothing.
    pub fn new(text: &'a str) -> Self {
        Locator { text, root: DeTable::parse(text).ok() }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        (line, col)
    }

    /// Byte span of the value (or, for a missing deeper step, the nearest enclosing key) at `path`.
    /// Returns `None` when not even the first step exists.
    pub fn span(&self, path: &str) -> Option<std::ops::Range<usize>> {
        let root = self.root.as_ref()?;
        let steps = parse_path(path);
        let mut best: Option<std::ops::Range<usize>> = None;
        let mut table: Option<&DeTable> = Some(root.get_ref());
        let mut value: Option<&toml::Spanned<DeValue>> = None;
        for step in steps {
            match step {
                Step::Key(k) => {
                    let t = match (table, value.map(|v| v.get_ref())) {
                        (Some(t), None) => t,
                        (_, Some(DeValue::Table(t))) => t,
                        _ => return best,
                    };
                    let Some((key, v)) = t.iter().find(|(key, _)| key.get_ref().as_ref() == k) else {
                        return best;
                    };
                    best = Some(key.span());
                    value = Some(v);
                    table = None;
                    if !matches!(v.get_ref(), DeValue::Table(_) | DeValue::Array(_)) {
                        best = Some(v.span());
                    }
                }
                Step::Index(i) => {
                    let Some(DeValue::Array(a)) = value.map(|v| v.get_ref()) else { return best };
                    let Some(v) = a.get(i) else { return best };
                    best = Some(v.span());
                    value = Some(v);
                }
            }
        }
        best
    }

    /// 1-based (line, column) of `path`, if it is in the document.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        self.span(path).map(|s| self.line_col(s.start))
    }

    /// Whether a key path exists in the document.
    pub fn has(&self, path: &str) -> bool {
        let Some(root) = self.root.as_ref() else { return false };
        let mut cur: Option<&DeValue> = None;
        let mut table = Some(root.get_ref());
        for step in parse_path(path) {
            match step {
                Step::Key(k) => {
                    let t = match (table, cur) {
                        (Some(t), None) => t,
                        (_, Some(DeValue::Table(t))) => t,
                        _ => return false,
                    };
                    match t.iter().find(|(key, _)| key.get_ref().as_ref() == k) {
                        Some((_, v)) => {
                            cur = Some(v.get_ref());
                            table = None;
                        }
                        None => return false,
                    }
                }
                Step::Index(i) => match cur {
                    Some(DeValue::Array(a)) if i < a.len() => cur = Some(a[i].get_ref()),
                    _ => return false,
                },
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_values() {
        let text = "[sweep]\nname = \"x\"\n\n[grid]\nmixture_ratio = [0.0, 0.5, 1.3]\n";
        let loc = Locator::new(text);
        assert_eq!(loc.locate("grid.mixture_ratio[2]"), Some((5, 28)));
        assert_eq!(loc.locate("sweep.name"), Some((2, 8)));
        assert_eq!(loc.locate("grid.missing"), None.or(loc.locate("grid")));
        assert!(loc.has("grid.mixture_ratio[1]"));
        assert!(!loc.has("grid.mixture_ratio[3]"));
    }

    #[test]
    fn parses_paths() {
        assert_eq!(
            parse_path("grid.zip[1].model"),
            vec![Step::Key("grid".into()), Step::Key("zip".into()), Step::Index(1), Step::Key("model".into())]
        );
    }
}
