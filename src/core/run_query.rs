//! How runs are searched and ordered: MLflow's `filter` and `order_by` syntax.
//!
//! A filter is a conjunction of comparisons, as MLflow's `runs/search` takes it:
//! `metrics.auc > 0.8 and params.model = 'xgboost' and attributes.status = 'FINISHED'`.
//! Metrics compare as numbers with `= != > >= < <=`; params, tags, `status` and `run_name`
//! compare as strings with `=` and `!=`; `start_time` and `end_time` compare as milliseconds
//! since the Unix epoch. A run without the metric, param or tag a comparison names does not
//! match it, whatever the comparator, as in MLflow. Keys may be quoted with backticks or
//! double quotes when they contain spaces or other punctuation.

use std::fmt;

use chrono::{DateTime, TimeZone, Utc};

use crate::core::names;
use crate::core::pagination::SortValue;
use crate::core::run::{Run, RunStatus};

/// The most keys one `order_by` may name.
pub const MAX_ORDER_KEYS: usize = 5;
/// The most comparisons one filter may hold.
pub const MAX_FILTER_CONDITIONS: usize = 20;

/// The attribute, metric, param or tag runs are sorted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunSortKey {
    StartTime,
    EndTime,
    Name,
    Metric(String),
    Param(String),
    Tag(String),
}

/// One sort key and its direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortTerm {
    pub key: RunSortKey,
    pub descending: bool,
}

/// The order of a run listing: one or more keys, ties broken by run id in the direction of the
/// first key. Runs without a value for a key come after all runs that have one, in either
/// direction, as in MLflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOrder {
    pub terms: Vec<SortTerm>,
}

impl Default for RunOrder {
    /// Newest first, as MLflow lists runs.
    fn default() -> Self {
        Self {
            terms: vec![SortTerm {
                key: RunSortKey::StartTime,
                descending: true,
            }],
        }
    }
}

impl RunOrder {
    /// Parses comma-separated keys, each `metrics.<key>`, `params.<key>`, `tags.<key>`,
    /// `start_time`, `end_time` or `run_name` (optionally `attributes.`-prefixed), followed by
    /// `ASC` (the default) or `DESC`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let terms = text
            .split(',')
            .map(parse_term)
            .collect::<Result<Vec<_>, _>>()?;
        if terms.len() > MAX_ORDER_KEYS {
            return Err(format!(
                "at most {MAX_ORDER_KEYS} keys, got {}",
                terms.len()
            ));
        }
        Ok(Self { terms })
    }

    /// Whether runs are ordered by id descending among equal keys.
    pub fn ids_descending(&self) -> bool {
        self.terms.first().is_some_and(|t| t.descending)
    }

    /// The values of the keys for a run, for page cursors.
    pub fn sort_values(&self, run: &Run) -> Vec<SortValue> {
        self.terms.iter().map(|t| t.key.value_of(run)).collect()
    }
}

fn parse_term(text: &str) -> Result<SortTerm, String> {
    let text = text.trim();
    let (field, descending) = match text.rsplit_once(char::is_whitespace) {
        Some((field, dir)) if dir.eq_ignore_ascii_case("asc") => (field.trim(), false),
        Some((field, dir)) if dir.eq_ignore_ascii_case("desc") => (field.trim(), true),
        _ => (text, false),
    };
    let unknown = || {
        format!(
            "cannot order by {field:?}; use metrics.<key>, params.<key>, tags.<key>, start_time, \
             end_time or run_name, each followed by ASC or DESC and separated by commas"
        )
    };
    let (entity, key) = split_identifier(field).ok_or_else(unknown)?;
    let key = match entity {
        Entity::Metric => RunSortKey::Metric(checked_key(&key, "metric")?),
        Entity::Param => RunSortKey::Param(checked_key(&key, "param")?),
        Entity::Tag => RunSortKey::Tag(checked_key(&key, "tag")?),
        Entity::Attribute => match key.as_str() {
            "start_time" => RunSortKey::StartTime,
            "end_time" => RunSortKey::EndTime,
            "run_name" | "name" => RunSortKey::Name,
            _ => return Err(unknown()),
        },
    };
    Ok(SortTerm { key, descending })
}

fn checked_key(key: &str, what: &str) -> Result<String, String> {
    names::validate_key(key).map_err(|e| format!("{what} key {key:?} {e}"))?;
    Ok(key.to_owned())
}

impl RunSortKey {
    fn value_of(&self, run: &Run) -> SortValue {
        let text = |v: Option<&String>| v.map_or(SortValue::Null, |v| SortValue::Text(v.clone()));
        match self {
            Self::StartTime => SortValue::Time(run.start_time),
            Self::EndTime => run.end_time.map_or(SortValue::Null, SortValue::Time),
            Self::Name => SortValue::Text(run.name.clone()),
            Self::Metric(key) => run
                .metrics
                .iter()
                .find(|m| &m.key == key)
                .map_or(SortValue::Null, |m| SortValue::Float(m.value)),
            Self::Param(key) => text(run.params.get(key)),
            Self::Tag(key) => text(run.tags.get(key)),
        }
    }
}

impl fmt::Display for RunSortKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartTime => f.write_str("start_time"),
            Self::EndTime => f.write_str("end_time"),
            Self::Name => f.write_str("run_name"),
            Self::Metric(key) => write!(f, "metrics.`{key}`"),
            Self::Param(key) => write!(f, "params.`{key}`"),
            Self::Tag(key) => write!(f, "tags.`{key}`"),
        }
    }
}

impl fmt::Display for RunOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let direction = if term.descending { "DESC" } else { "ASC" };
            write!(f, "{} {direction}", term.key)?;
        }
        Ok(())
    }
}

/// What a filter comparison looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterField {
    Metric(String),
    Param(String),
    Tag(String),
    Status,
    RunName,
    StartTime,
    EndTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Comparator {
    pub fn as_sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }

    fn as_mlflow(self) -> &'static str {
        match self {
            Self::Ne => "!=",
            other => other.as_sql(),
        }
    }
}

/// The value a comparison compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum FilterValue {
    Number(f64),
    Text(String),
    Time(DateTime<Utc>),
}

/// One comparison of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub field: FilterField,
    pub comparator: Comparator,
    pub value: FilterValue,
}

/// Every comparison must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    pub conditions: Vec<Condition>,
}

/// The whole question a run listing answers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunQuery {
    pub filter: RunFilter,
    pub order: RunOrder,
}

impl RunQuery {
    /// A stable description of the filter and order, which page tokens are bound to.
    pub fn describe(&self) -> String {
        format!("{} | {}", self.filter, self.order)
    }
}

impl fmt::Display for RunFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, c) in self.conditions.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            let field = match &c.field {
                FilterField::Metric(k) => format!("metrics.`{k}`"),
                FilterField::Param(k) => format!("params.`{k}`"),
                FilterField::Tag(k) => format!("tags.`{k}`"),
                FilterField::Status => "attributes.status".into(),
                FilterField::RunName => "attributes.run_name".into(),
                FilterField::StartTime => "attributes.start_time".into(),
                FilterField::EndTime => "attributes.end_time".into(),
            };
            let value = match &c.value {
                FilterValue::Number(n) => n.to_string(),
                FilterValue::Text(t) => format!("'{}'", t.replace('\'', "\\'")),
                FilterValue::Time(t) => t.timestamp_millis().to_string(),
            };
            write!(f, "{field} {} {value}", c.comparator.as_mlflow())?;
        }
        Ok(())
    }
}

/// A token of the filter language and the character position it starts at.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `metrics.auc`, `attributes.status`, `status`, `and`: an identifier, possibly with a
    /// quoted key part (already unquoted).
    Word {
        entity: Option<String>,
        name: String,
    },
    Str(String),
    Number(f64),
    Op(Comparator),
}

/// Where a filter went wrong: a message naming the offending token and its position.
fn at(position: usize, message: impl fmt::Display) -> String {
    format!("at character {}: {message}", position + 1)
}

fn lex(text: &str) -> Result<Vec<(usize, Token, String)>, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (start, c) = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let begin = i;
        let token = match c {
            '\'' | '"' => {
                let (value, next) = quoted(&chars, i, c)?;
                i = next;
                Token::Str(value)
            }
            '=' => {
                i += 1;
                if chars.get(i).map(|(_, c)| *c) == Some('=') {
                    i += 1;
                }
                Token::Op(Comparator::Eq)
            }
            '!' | '<' | '>' => {
                let next = chars.get(i + 1).map(|(_, c)| *c);
                let (op, width) = match (c, next) {
                    ('!', Some('=')) => (Comparator::Ne, 2),
                    ('<', Some('>')) => (Comparator::Ne, 2),
                    ('<', Some('=')) => (Comparator::Le, 2),
                    ('>', Some('=')) => (Comparator::Ge, 2),
                    ('<', _) => (Comparator::Lt, 1),
                    ('>', _) => (Comparator::Gt, 1),
                    _ => return Err(at(start, "'!' must be followed by '='")),
                };
                i += width;
                Token::Op(op)
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut end = i + 1;
                while end < chars.len()
                    && (chars[end].1.is_ascii_alphanumeric()
                        || matches!(chars[end].1, '.' | '-' | '+'))
                {
                    end += 1;
                }
                let literal: String = chars[i..end].iter().map(|(_, c)| c).collect();
                let number: f64 = literal
                    .parse()
                    .ok()
                    .filter(|n: &f64| n.is_finite())
                    .ok_or_else(|| at(start, format!("{literal:?} is not a number")))?;
                i = end;
                Token::Number(number)
            }
            c if c.is_alphabetic() || c == '_' || c == '`' => {
                let (token, next) = word(&chars, i)?;
                i = next;
                token
            }
            other => return Err(at(start, format!("unexpected {other:?}"))),
        };
        let source: String = chars[begin..i].iter().map(|(_, c)| c).collect();
        tokens.push((start, token, source));
    }
    Ok(tokens)
}

/// A quoted string starting at `chars[i]`; a backslash escapes the next character.
fn quoted(chars: &[(usize, char)], i: usize, quote: char) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut j = i + 1;
    while j < chars.len() {
        match chars[j].1 {
            '\\' if j + 1 < chars.len() => {
                value.push(chars[j + 1].1);
                j += 2;
            }
            c if c == quote => return Ok((value, j + 1)),
            c => {
                value.push(c);
                j += 1;
            }
        }
    }
    Err(at(
        chars[i].0,
        format!("the string opened here has no closing {quote}"),
    ))
}

/// An identifier: `word`, `entity.key`, `entity.`key``, `entity."key"`.
fn word(chars: &[(usize, char)], i: usize) -> Result<(Token, usize), String> {
    let plain = |c: char| c.is_alphanumeric() || c == '_';
    let mut j = i;
    let part = |j: &mut usize| -> Result<String, String> {
        match chars.get(*j).map(|(_, c)| *c) {
            Some(q @ ('`' | '"')) => {
                let (value, next) = quoted(chars, *j, q)?;
                *j = next;
                Ok(value)
            }
            _ => {
                let start = *j;
                while *j < chars.len() && plain(chars[*j].1) {
                    *j += 1;
                }
                Ok(chars[start..*j].iter().map(|(_, c)| c).collect())
            }
        }
    };
    let first = part(&mut j)?;
    if chars.get(j).map(|(_, c)| *c) != Some('.') {
        return Ok((
            Token::Word {
                entity: None,
                name: first,
            },
            j,
        ));
    }
    j += 1;
    // The key: quoted, or everything up to whitespace or an operator (keys may hold dots,
    // slashes, colons and dashes).
    let key = match chars.get(j).map(|(_, c)| *c) {
        Some('`' | '"') => part(&mut j)?,
        _ => {
            let start = j;
            while j < chars.len()
                && !chars[j].1.is_whitespace()
                && !matches!(chars[j].1, '=' | '!' | '<' | '>' | '\'' | '"')
            {
                j += 1;
            }
            chars[start..j].iter().map(|(_, c)| c).collect()
        }
    };
    Ok((
        Token::Word {
            entity: Some(first),
            name: key,
        },
        j,
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
}

fn entity_of(prefix: &str) -> Option<Entity> {
    match prefix.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Some(Entity::Metric),
        "param" | "params" | "parameter" | "parameters" => Some(Entity::Param),
        "tag" | "tags" => Some(Entity::Tag),
        "attribute" | "attributes" | "attr" | "run" => Some(Entity::Attribute),
        _ => None,
    }
}

/// `metrics.auc` → (Metric, "auc"); a bare word is an attribute.
fn split_identifier(text: &str) -> Option<(Entity, String)> {
    let tokens = lex(text).ok()?;
    match tokens.as_slice() {
        [(_, Token::Word { entity, name }, _)] => match entity {
            Some(prefix) => Some((entity_of(prefix)?, name.clone())),
            None => Some((Entity::Attribute, name.clone())),
        },
        _ => None,
    }
}

impl RunFilter {
    /// Parses MLflow's search syntax; the error names the offending token and its position.
    pub fn parse(text: &str) -> Result<Self, String> {
        let tokens = lex(text)?;
        let mut conditions = Vec::new();
        let mut rest = tokens.as_slice();
        if rest.is_empty() {
            return Ok(Self::default());
        }
        loop {
            let (condition, after) = condition(rest, text.len())?;
            conditions.push(condition);
            rest = after;
            match rest {
                [] => break,
                [(pos, Token::Word { entity: None, name }, source), tail @ ..] => {
                    if name.eq_ignore_ascii_case("and") {
                        rest = tail;
                        if rest.is_empty() {
                            return Err(at(*pos, "AND must be followed by a comparison"));
                        }
                    } else if name.eq_ignore_ascii_case("or") {
                        return Err(at(*pos, "OR is not supported; join comparisons with AND"));
                    } else {
                        return Err(at(*pos, format!("expected AND, found {source:?}")));
                    }
                }
                [(pos, _, source), ..] => {
                    return Err(at(*pos, format!("expected AND, found {source:?}")));
                }
            }
        }
        if conditions.len() > MAX_FILTER_CONDITIONS {
            return Err(format!(
                "at most {MAX_FILTER_CONDITIONS} comparisons, got {}",
                conditions.len()
            ));
        }
        Ok(Self { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }
}

type Tokens<'a> = &'a [(usize, Token, String)];

/// One `field comparator value` at the head of `tokens`.
fn condition(tokens: Tokens<'_>, end: usize) -> Result<(Condition, Tokens<'_>), String> {
    let [(pos, first, source), rest @ ..] = tokens else {
        return Err(at(end, "expected a comparison"));
    };
    let Token::Word { entity, name } = first else {
        return Err(at(
            *pos,
            format!("expected a field such as metrics.auc, found {source:?}"),
        ));
    };
    let entity = match entity {
        Some(prefix) => entity_of(prefix).ok_or_else(|| {
            at(
                *pos,
                format!(
                    "unknown field {source:?}; use metrics.<key>, params.<key>, tags.<key> or \
                     attributes.<status|run_name|start_time|end_time>"
                ),
            )
        })?,
        None => Entity::Attribute,
    };
    let field = match entity {
        Entity::Metric => FilterField::Metric(key_at(*pos, name, "metric")?),
        Entity::Param => FilterField::Param(key_at(*pos, name, "param")?),
        Entity::Tag => FilterField::Tag(key_at(*pos, name, "tag")?),
        Entity::Attribute => match name.as_str() {
            "status" => FilterField::Status,
            "run_name" => FilterField::RunName,
            "start_time" => FilterField::StartTime,
            "end_time" => FilterField::EndTime,
            _ => {
                return Err(at(
                    *pos,
                    format!(
                        "unknown attribute {name:?}; use status, run_name, start_time or end_time"
                    ),
                ))
            }
        },
    };
    let [(op_pos, op_token, op_source), rest @ ..] = rest else {
        return Err(at(end, format!("expected a comparator after {source:?}")));
    };
    let Token::Op(comparator) = op_token else {
        return Err(at(
            *op_pos,
            format!("expected a comparator (= != > >= < <=), found {op_source:?}"),
        ));
    };
    let [(value_pos, value_token, value_source), rest @ ..] = rest else {
        return Err(at(end, format!("expected a value after {op_source:?}")));
    };
    let numeric = matches!(
        field,
        FilterField::Metric(_) | FilterField::StartTime | FilterField::EndTime
    );
    if !numeric && !matches!(comparator, Comparator::Eq | Comparator::Ne) {
        return Err(at(
            *op_pos,
            format!("{source} compares as a string: use = or !=, not {op_source:?}"),
        ));
    }
    let value = match (&field, value_token) {
        (FilterField::Metric(_), Token::Number(n)) => FilterValue::Number(*n),
        (FilterField::StartTime | FilterField::EndTime, Token::Number(n)) => {
            let millis = n.trunc() as i64;
            let time = Utc
                .timestamp_millis_opt(millis)
                .single()
                .ok_or_else(|| at(*value_pos, format!("{value_source} is not a valid time")))?;
            FilterValue::Time(time)
        }
        (FilterField::Status, Token::Str(s)) => {
            let status = s.parse::<RunStatus>().map_err(|e| at(*value_pos, e))?;
            FilterValue::Text(status.as_str().to_owned())
        }
        (_, Token::Str(s)) if !numeric => FilterValue::Text(s.clone()),
        (_, _) if numeric => {
            return Err(at(
                *value_pos,
                format!("{source} compares as a number, found {value_source}"),
            ))
        }
        (_, _) => {
            return Err(at(
                *value_pos,
                format!("{source} compares with a quoted string, found {value_source}"),
            ))
        }
    };
    Ok((
        Condition {
            field,
            comparator: *comparator,
            value,
        },
        rest,
    ))
}

fn key_at(position: usize, key: &str, what: &str) -> Result<String, String> {
    names::validate_key(key).map_err(|e| at(position, format!("{what} key {key:?} {e}")))?;
    Ok(key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlflow_order_by_clauses_parse() {
        let auc = RunOrder::parse("metrics.auc DESC").unwrap();
        let start = RunOrder::parse("attributes.start_time").unwrap();

        assert_eq!(
            auc.terms,
            vec![SortTerm {
                key: RunSortKey::Metric("auc".into()),
                descending: true
            }]
        );
        assert_eq!(start.terms[0].key, RunSortKey::StartTime);
        assert!(!start.terms[0].descending);
        assert_eq!(auc.to_string(), "metrics.`auc` DESC");
    }

    #[test]
    fn several_order_keys_keep_their_order_and_directions() {
        let order = RunOrder::parse("params.model ASC, metrics.`val loss` DESC, run_name").unwrap();

        assert_eq!(
            order
                .terms
                .iter()
                .map(|t| t.key.clone())
                .collect::<Vec<_>>(),
            vec![
                RunSortKey::Param("model".into()),
                RunSortKey::Metric("val loss".into()),
                RunSortKey::Name
            ]
        );
        assert_eq!(
            order.terms.iter().map(|t| t.descending).collect::<Vec<_>>(),
            vec![false, true, false]
        );
    }

    #[test]
    fn unknown_order_fields_are_refused_with_the_choices() {
        let err = RunOrder::parse("colour DESC").unwrap_err();

        assert!(err.contains("metrics.<key>"), "{err}");
    }

    #[test]
    fn the_example_filter_parses_into_three_comparisons() {
        let filter = RunFilter::parse(
            "metrics.auc > 0.8 and params.model = 'xgboost' and attributes.status = 'FINISHED'",
        )
        .unwrap();

        assert_eq!(
            filter.conditions,
            vec![
                Condition {
                    field: FilterField::Metric("auc".into()),
                    comparator: Comparator::Gt,
                    value: FilterValue::Number(0.8)
                },
                Condition {
                    field: FilterField::Param("model".into()),
                    comparator: Comparator::Eq,
                    value: FilterValue::Text("xgboost".into())
                },
                Condition {
                    field: FilterField::Status,
                    comparator: Comparator::Eq,
                    value: FilterValue::Text("FINISHED".into())
                },
            ]
        );
    }

    #[test]
    fn quoted_keys_dotted_keys_and_every_comparator_parse() {
        let filter = RunFilter::parse(
            "metrics.`val loss` <= 1e-2 AND metrics.val.acc >= -3 AND tags.\"team name\" != \"a\" \
             AND metrics.x < 1 AND metrics.y <> 2 AND attributes.start_time >= 1700000000000",
        )
        .unwrap();

        let fields: Vec<_> = filter.conditions.iter().map(|c| c.field.clone()).collect();
        assert_eq!(
            fields,
            vec![
                FilterField::Metric("val loss".into()),
                FilterField::Metric("val.acc".into()),
                FilterField::Tag("team name".into()),
                FilterField::Metric("x".into()),
                FilterField::Metric("y".into()),
                FilterField::StartTime,
            ]
        );
        assert_eq!(filter.conditions[1].value, FilterValue::Number(-3.0));
        assert_eq!(filter.conditions[4].comparator, Comparator::Ne);
    }

    #[test]
    fn errors_point_at_the_bad_token() {
        let cases = [
            ("metrics.auc > 0.8 or params.a = 'b'", "character 19", "OR"),
            ("metrics.auc > 'high'", "character 15", "number"),
            ("params.model > 'a'", "character 14", "= or !="),
            ("metrics.auc >", "character 14", "value"),
            ("colour.red = 'x'", "character 1", "unknown field"),
            ("params.a = 'open", "character 12", "closing"),
            ("attributes.status = 'DONE'", "character 21", "RUNNING"),
            ("metrics.auc 0.8", "character 13", "comparator"),
        ];
        for (filter, position, words) in cases {
            let err = RunFilter::parse(filter).unwrap_err();
            assert!(err.contains(position), "{filter}: {err}");
            assert!(err.contains(words), "{filter}: {err}");
        }
    }

    #[test]
    fn an_empty_filter_matches_everything() {
        assert!(RunFilter::parse("  ").unwrap().is_empty());
    }
}
