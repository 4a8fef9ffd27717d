//! From a user's query string and the request's bounds to the Tantivy query run on every index:
//! the parsed query (default fields `key` and `value`), made to mean what its boolean
//! operators say, with single offsets and timestamps looked up on their fast fields, and the
//! filters (topic, partitions and their offset ranges, timestamps) that every hit must also
//! match.

use std::ops::Bound;

use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery, TermQuery,
    TermSetQuery,
};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TokenizerManager;
use tantivy::Term;

use crate::segment::index::{schema, schema_with_offset_terms, Fields};

/// Parses a query in Tantivy's language; the error is Tantivy's message, or ours for a form
/// that offsets and timestamps do not take.
pub fn parse(text: &str) -> Result<Box<dyn Query>, String> {
    let (_, fields) = schema();
    // Tantivy's parser refuses a single value of a field that is only fast. Against the schema
    // that had offsets and timestamps as terms too it reads them as terms, which `normalize`
    // turns into ranges of one value on the fast fields.
    let parser = QueryParser::new(
        schema_with_offset_terms(),
        vec![fields.key, fields.value],
        TokenizerManager::default(),
    );
    let query = parser.parse_query(text).map_err(|e| e.to_string())?;
    let query = normalize(query, &fields);
    if let Some(name) = term_on_fast_field(&*query, &fields) {
        return Err(format!(
            "{name} takes a value, a set or a range ({name}:42, {name}: IN [1 2], \
             {name}:[1 TO 9]), without a boost"
        ));
    }
    Ok(query)
}

/// Tantivy parses `a AND NOT b` into `+a +(-b)`, and a boolean query of only negative clauses
/// matches nothing, so the whole query would match nothing. A purely negative clause means
/// "everything but": give it an explicit match-all, at every depth. Terms of offsets and
/// timestamps become ranges on their fast fields.
fn normalize(query: Box<dyn Query>, fields: &Fields) -> Box<dyn Query> {
    if let Some(ranges) = as_ranges(&*query, fields) {
        return ranges;
    }
    let Some(boolean) = query.downcast_ref::<BooleanQuery>() else {
        return query;
    };
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = boolean
        .clauses()
        .iter()
        .map(|(occur, sub)| (*occur, normalize(sub.box_clone(), fields)))
        .collect();
    if clauses.iter().all(|(occur, _)| *occur == Occur::MustNot) {
        clauses.push((Occur::Must, Box::new(AllQuery)));
    }
    Box::new(BooleanQuery::new(clauses))
}

/// A term query, or a term set query, on offsets or timestamps as the same values matched on
/// the fast field: one range of one value each.
fn as_ranges(query: &dyn Query, fields: &Fields) -> Option<Box<dyn Query>> {
    let terms: Vec<Term> = if let Some(term) = query.downcast_ref::<TermQuery>() {
        vec![term.term().clone()]
    } else if query.downcast_ref::<TermSetQuery>().is_some() {
        let mut terms = Vec::new();
        query.query_terms(&mut |term, _| terms.push(term.clone()));
        terms
    } else {
        return None;
    };
    if terms.is_empty() || !terms.iter().all(|t| is_fast_only(t, fields)) {
        return None;
    }
    let ranges: Vec<(Occur, Box<dyn Query>)> = terms
        .into_iter()
        .map(|term| {
            let range = RangeQuery::new(Bound::Included(term.clone()), Bound::Included(term));
            (Occur::Should, Box::new(range) as Box<dyn Query>)
        })
        .collect();
    Some(Box::new(BooleanQuery::new(ranges)))
}

/// The name of a fast-only field that `query` still looks up as a term (which would fail
/// when the search runs), if any.
fn term_on_fast_field(query: &dyn Query, fields: &Fields) -> Option<&'static str> {
    let mut found = None;
    query.query_terms(&mut |term, _| {
        if is_fast_only(term, fields) {
            found = Some(if term.field() == fields.offset {
                "offset"
            } else {
                "timestamp"
            });
        }
    });
    found
}

fn is_fast_only(term: &Term, fields: &Fields) -> bool {
    term.field() == fields.offset || term.field() == fields.timestamp
}

/// The offsets of one partition a search covers in one tier: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

/// `query` restricted to one topic, the partitions' offset ranges and a timestamp range
/// (inclusive).
pub fn filtered(
    query: &dyn Query,
    topic_id: &uuid::Uuid,
    ranges: &[PartitionRange],
    timestamps: (Option<i64>, Option<i64>),
) -> Box<dyn Query> {
    let (_, fields) = schema();
    let mut filters: Vec<(Occur, Box<dyn Query>)> = vec![
        (
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(fields.topic_id, &topic_id.to_string()),
                IndexRecordOption::Basic,
            )),
        ),
        (Occur::Must, partitions(&fields, ranges)),
    ];
    if timestamps != (None, None) {
        filters.push((
            Occur::Must,
            Box::new(RangeQuery::new(
                bound(fields.timestamp, timestamps.0),
                bound(fields.timestamp, timestamps.1),
            )),
        ));
    }
    // Filters add nothing to the score: scores stay comparable across indexes.
    let filters = ConstScoreQuery::new(Box::new(BooleanQuery::new(filters)), 0.0);
    Box::new(BooleanQuery::new(vec![
        (Occur::Must, query.box_clone()),
        (Occur::Must, Box::new(filters)),
    ]))
}

/// Any of the partitions, each within its offsets.
fn partitions(fields: &Fields, ranges: &[PartitionRange]) -> Box<dyn Query> {
    let any: Vec<(Occur, Box<dyn Query>)> = ranges
        .iter()
        .map(|range| {
            let one: Box<dyn Query> = Box::new(BooleanQuery::new(vec![
                (
                    Occur::Must,
                    Box::new(TermQuery::new(
                        Term::from_field_i64(fields.partition, i64::from(range.partition)),
                        IndexRecordOption::Basic,
                    )),
                ),
                (
                    Occur::Must,
                    Box::new(RangeQuery::new(
                        Bound::Included(Term::from_field_i64(fields.offset, range.start)),
                        Bound::Excluded(Term::from_field_i64(fields.offset, range.end)),
                    )),
                ),
            ]));
            (Occur::Should, one)
        })
        .collect();
    Box::new(BooleanQuery::new(any))
}

fn bound(field: tantivy::schema::Field, value: Option<i64>) -> Bound<Term> {
    value.map_or(Bound::Unbounded, |v| {
        Bound::Included(Term::from_field_i64(field, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_queries_are_errors_with_tantivys_message() {
        let error = parse("value:(unclosed").unwrap_err();
        assert!(!error.is_empty());
        assert!(parse("error AND NOT warn").is_ok());
        assert!(
            parse("NOT warn").unwrap_err().contains("excluding"),
            "Tantivy refuses a query of only exclusions"
        );
        assert!(parse("offset:[x TO 3]").is_err());
    }

    #[test]
    fn offsets_and_timestamps_are_looked_up_as_ranges() {
        for text in [
            "offset:42",
            "offset: IN [1 2]",
            "timestamp:1000 AND value:x",
        ] {
            let query = parse(text).unwrap();
            assert!(
                term_on_fast_field(&*query, &schema().1).is_none(),
                "{text}: {query:?}"
            );
        }
        assert!(parse("offset:[42 TO 42]").is_ok());
        assert!(parse("timestamp:[1000 TO *]").is_ok());
        assert!(parse("partition:3").is_ok());
        // A boost hides the term from the rewrite: refused with a message, not failed later.
        let error = parse("offset:42^2").unwrap_err();
        assert!(error.contains("offset takes a value"), "{error}");
        assert!(parse("offset:x").is_err());
    }
}
