//! The per-field indexes of a compiled HTTP rule set: for `method`,
//! `path` and `host`, literal patterns in a hash map and the remaining
//! regexes in one `RegexSet`, so one lookup finds every accepting rule.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, OnceLock, PoisonError};

use regex::{Regex, RegexSet, RegexSetBuilder};

use crate::l7::error::{L7Protocol, L7RuleError};

/// Compiled-size limit for one regex (and for the shared set, per pattern);
/// a rule beyond it is rejected rather than slowing every request.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Which rules accept a given value of one field (`method`, `path` or
/// `host`).
#[derive(Debug, Clone)]
pub(super) struct FieldIndex {
    /// Bitset of rules that do not constrain the field.
    unconstrained: Vec<u64>,
    /// Literal value -> rules whose pattern is exactly that literal (or an
    /// alternation containing it).
    literals: HashMap<String, Vec<usize>>,
    /// The non-literal patterns, anchored.
    regexes: RegexSet,
    /// Pattern index in `regexes` -> rule index.
    regex_rules: Vec<usize>,
}

impl FieldIndex {
    /// ORs into `out` the rules accepting `value` (`None`: the field is
    /// absent, which only unconstrained rules accept).
    pub(super) fn accepting(&self, value: Option<&str>, out: &mut [u64]) {
        for (o, u) in out.iter_mut().zip(&self.unconstrained) {
            *o |= u;
        }
        let Some(value) = value else {
            return;
        };
        if let Some(rules) = self.literals.get(value) {
            for &rule in rules {
                set_bit(out, rule);
            }
        }
        if !self.regex_rules.is_empty() && value.is_ascii() {
            for hit in self.regexes.matches(value).iter() {
                set_bit(out, self.regex_rules[hit]);
            }
        }
    }

    /// Whether no rule constrains this field.
    pub(super) fn is_trivial(&self) -> bool {
        self.literals.is_empty() && self.regex_rules.is_empty()
    }
}

fn set_bit(bits: &mut [u64], index: usize) {
    bits[index / 64] |= 1 << (index % 64);
}

/// Collects one field's patterns while compiling.
#[derive(Default)]
pub(super) struct FieldBuilder {
    unconstrained: Vec<usize>,
    literals: HashMap<String, Vec<usize>>,
    regexes: Vec<String>,
    regex_rules: Vec<usize>,
}

impl FieldBuilder {
    pub(super) fn add(
        &mut self,
        rule: usize,
        field: &str,
        pattern: Option<&str>,
    ) -> Result<(), L7RuleError> {
        let Some(pattern) = pattern.filter(|p| !p.is_empty()) else {
            self.unconstrained.push(rule);
            return Ok(());
        };
        let anchored = anchored_regex(rule, field, pattern)?;
        match literal_alternatives(pattern) {
            Some(literals) => {
                for literal in literals {
                    let rules = self.literals.entry(literal).or_default();
                    if rules.last() != Some(&rule) {
                        rules.push(rule);
                    }
                }
            }
            None => {
                self.regexes.push(anchored.as_str().to_string());
                self.regex_rules.push(rule);
            }
        }
        Ok(())
    }

    pub(super) fn build(self, rules: usize) -> Result<FieldIndex, L7RuleError> {
        let mut unconstrained = vec![0u64; rules.div_ceil(64)];
        for rule in self.unconstrained {
            set_bit(&mut unconstrained, rule);
        }
        let regexes = compiled_set(&self.regexes).map_err(|e| L7RuleError::InvalidRegex {
            protocol: L7Protocol::Http,
            rule: self.regex_rules.first().copied().unwrap_or(0),
            field: "(all rules)".to_string(),
            pattern: String::new(),
            reason: format!("the rules' regexes together are too large: {e}"),
        })?;
        Ok(FieldIndex {
            unconstrained,
            literals: self.literals,
            regexes,
            regex_rules: self.regex_rules,
        })
    }
}

/// Compiled values by what they were compiled from, shared by every rule
/// set of the process: thousands of policies repeat the same patterns, and
/// each is compiled once (loading validates every rule set, the proxies
/// compile them again). Bounded: past [`CACHE_ENTRIES`] it starts over
/// rather than growing with a stream of distinct patterns.
struct CompileCache<K, V> {
    map: OnceLock<Mutex<HashMap<K, V>>>,
}

/// Entries one [`CompileCache`] holds at most.
const CACHE_ENTRIES: usize = 4096;

impl<K: Eq + Hash, V: Clone> CompileCache<K, V> {
    const fn new() -> Self {
        CompileCache {
            map: OnceLock::new(),
        }
    }

    /// The value for `key`, compiled by `compile` when it is not cached.
    /// Compiling happens outside the lock.
    fn get_or_compile(&self, key: K, compile: impl FnOnce(&K) -> V) -> V {
        let map = self.map.get_or_init(Default::default);
        if let Some(v) = map.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return v.clone();
        }
        let v = compile(&key);
        let mut map = map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() >= CACHE_ENTRIES {
            map.clear();
        }
        map.insert(key, v.clone());
        v
    }

    #[cfg(test)]
    fn contains(&self, key: &K) -> bool {
        self.map.get().is_some_and(|m| {
            m.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(key)
        })
    }
}

/// A pattern's anchored regex, or why it does not compile (alone, or
/// anchored).
static PATTERNS: CompileCache<String, Result<Regex, (bool, String)>> = CompileCache::new();

/// One field's non-literal patterns as a set.
static SETS: CompileCache<Vec<String>, Result<RegexSet, String>> = CompileCache::new();

fn compiled_set(patterns: &[String]) -> Result<RegexSet, String> {
    SETS.get_or_compile(patterns.to_vec(), |patterns| {
        RegexSetBuilder::new(patterns)
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(patterns.len().max(1)))
            .build()
            .map_err(|e| e.to_string())
    })
}

/// Compiles `pattern` alone (so that it cannot unbalance the anchoring
/// group), then anchored to match whole values only.
fn anchored_regex(rule: usize, field: &str, pattern: &str) -> Result<Regex, L7RuleError> {
    let compiled = PATTERNS.get_or_compile(pattern.to_string(), |pattern| {
        regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| (false, e.to_string()))?;
        regex::RegexBuilder::new(&format!(r"\A(?:{pattern})\z"))
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| (true, e.to_string()))
    });
    compiled.map_err(|(anchoring, e)| L7RuleError::InvalidRegex {
        protocol: L7Protocol::Http,
        rule,
        field: field.to_string(),
        pattern: pattern.to_string(),
        reason: if anchoring {
            format!("cannot be anchored: {e}")
        } else {
            e
        },
    })
}

/// The strings a pattern matches when it is a literal or an alternation of
/// literals (`GET`, `GET|POST`, `/api/v1\.0/users`); `None` when it uses
/// any other regex feature. `pattern` has compiled, so escapes are valid.
pub(super) fn literal_alternatives(pattern: &str) -> Option<Vec<String>> {
    let mut alternatives = vec![String::new()];
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let current = alternatives.last_mut()?;
        match c {
            // `\<` and `\>` are word boundaries; letters are classes or
            // assertions; any other escaped ASCII punctuation is itself.
            '\\' => match chars.next()? {
                e if e.is_ascii_punctuation() && e != '<' && e != '>' => current.push(e),
                _ => return None,
            },
            '|' => alternatives.push(String::new()),
            '.' | '+' | '*' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '^' | '$' => return None,
            c => current.push(c),
        }
    }
    Some(alternatives)
}

#[cfg(test)]
mod tests;
