//! Processors: applied to every batch of records before the flushers.

use anyhow::Result;
use regex::Regex;

use crate::config::ProcessorSettings;
use crate::records::Record;

pub enum Processor {
    Default,
    FilterRegex { include: Vec<(String, Regex)>, exclude: Vec<(String, Regex)> },
}

impl Processor {
    pub fn new(s: &ProcessorSettings) -> Result<Self> {
        Ok(match s {
            ProcessorSettings::Default => Self::Default,
            ProcessorSettings::FilterRegex(f) => {
                let compile = |m: &std::collections::BTreeMap<String, String>| -> Result<Vec<(String, Regex)>> {
                    m.iter().map(|(k, v)| Ok((k.clone(), Regex::new(v)?))).collect()
                };
                Self::FilterRegex { include: compile(&f.include)?, exclude: compile(&f.exclude)? }
            }
        })
    }

    pub fn apply(&self, records: &mut Vec<Record>) {
        match self {
            Self::Default => {}
            Self::FilterRegex { include, exclude } => records.retain(|r| {
                // A missing field does not match.
                let matches = |(field, re): &(String, Regex)| r.text(field).is_some_and(|v| re.is_match(&v));
                include.iter().all(matches) && !exclude.iter().any(matches)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FilterRegexSettings;
    use crate::records::Kind;

    #[test]
    fn filter_regex_includes_and_excludes() {
        let s = FilterRegexSettings {
            include: [("type".to_string(), "^protocols$".to_string())].into(),
            exclude: [("protocol".to_string(), "dns".to_string())].into(),
        };
        let p = Processor::new(&ProcessorSettings::FilterRegex(s)).unwrap();
        let rec = |t: Kind, proto: &str| {
            let mut r = Record::new(t);
            r.push("protocol", proto);
            r
        };
        let mut rs = vec![rec(Kind::Protocols, "http"), rec(Kind::Protocols, "dns"), rec(Kind::Statistics, "")];
        p.apply(&mut rs);
        assert_eq!(rs, vec![rec(Kind::Protocols, "http")]);
    }
}
