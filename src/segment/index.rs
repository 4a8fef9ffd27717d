//! The Tantivy index inside each segment object: one document per record, built from
//! `CanonicalRecord`s. Fast fields `partition`, `offset`, `timestamp` (and `topic_id` as an exact
//! term) locate a hit; `key` is searchable text; `value` is a JSON field that holds the value's
//! text at its root (so `value:term` searches the whole value) and, when the value is a JSON
//! object, the object too (so `value.level:error` finds a field); headers are a JSON field, so
//! `header.<name>:term` finds a header value. The index is built in a temporary directory off
//! the async executor and its files are packed into the object, after the data blocks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tantivy::schema::{Field, NumericOptions, OwnedValue, Schema, FAST, INDEXED, STRING, TEXT};
use tantivy::TantivyDocument as Document;
use tantivy::{Index, IndexSettings, IndexWriter, TantivyDocument};
use uuid::Uuid;

use super::canonical::{CanonicalBatch, CanonicalRecord};
use super::scratch_directory::ScratchDirectory;
use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("tantivy: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("index directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("the index in {0} has another schema than this broker's")]
    Schema(String),
}

/// The schema's fields.
pub struct Fields {
    pub topic_id: Field,
    pub partition: Field,
    pub offset: Field,
    pub timestamp: Field,
    pub key: Field,
    pub value: Field,
    pub header: Field,
}

/// The schema every segment index uses (the object's format version covers it: format 3
/// made `value` a JSON field). `offset` and `timestamp` are fast fields only: every filter and
/// range over them runs on the fast field, and indexing them as terms too (a new term for
/// nearly every record) took about 45% of the time spent indexing a record.
pub fn schema() -> (Schema, Fields) {
    schema_with_positions(NumericOptions::default().set_fast())
}

/// Whether this broker can search an index with `schema`: the current one, or the one indexes
/// had until 2026-12-02, whose offsets and timestamps were terms as well (same fields, same
/// order, so the same queries run on both).
pub fn readable(schema: &Schema) -> bool {
    *schema == self::schema().0 || *schema == schema_with_offset_terms()
}

/// The schema indexes had until 2026-12-02: offsets and timestamps terms as well as fast fields.
/// Queries are parsed against it, so that the parser reads `offset:42` as a term, which
/// `search::query` turns into a range of one on the fast field.
pub fn schema_with_offset_terms() -> Schema {
    let indexed = NumericOptions::default().set_indexed().set_fast();
    schema_with_positions(indexed).0
}

/// The schema with `positions` the options of `offset` and `timestamp`.
fn schema_with_positions(positions: NumericOptions) -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let fields = Fields {
        topic_id: builder.add_text_field("topic_id", STRING | FAST),
        partition: builder.add_i64_field("partition", INDEXED | FAST),
        offset: builder.add_i64_field("offset", positions.clone()),
        timestamp: builder.add_i64_field("timestamp", positions),
        key: builder.add_text_field("key", TEXT),
        value: builder.add_json_field("value", TEXT),
        header: builder.add_json_field("header", TEXT),
    };
    (builder.build(), fields)
}

/// Builds the index of one object, a batch at a time (so memory stays bounded by the writer's
/// budget, not by the segment), in a temporary directory.
pub struct IndexBuilder {
    dir: tempfile::TempDir,
    fields: Fields,
    writer: IndexWriter<TantivyDocument>,
}

impl IndexBuilder {
    /// Starts an index in a new temporary directory under `parent`.
    pub fn new(parent: &Path) -> Result<IndexBuilder, IndexError> {
        std::fs::create_dir_all(parent)?;
        let dir = tempfile::TempDir::new_in(parent)?;
        let (schema, fields) = schema();
        let directory = ScratchDirectory::open(dir.path())?;
        let index = Index::create(directory, schema, IndexSettings::default())?;
        let writer = index.writer_with_num_threads(1, limits::INDEX_WRITER_BYTES)?;
        Ok(IndexBuilder {
            dir,
            fields,
            writer,
        })
    }

    /// Indexes every record of a batch. Keys, values and header values that are not UTF-8 are
    /// left out of the index (the records themselves are stored either way).
    pub fn add_batch(
        &mut self,
        topic_id: &Uuid,
        partition: i32,
        batch: &CanonicalBatch,
    ) -> Result<(), IndexError> {
        let topic_id = topic_id.to_string();
        for record in &batch.records {
            let document = document(&self.fields, &topic_id, partition, record);
            self.writer.add_document(document)?;
        }
        Ok(())
    }

    /// Commits the index; its files stay in the temporary directory until the result is
    /// dropped, so they can be copied into an object without being held in memory.
    pub fn finish(mut self) -> Result<IndexFiles, IndexError> {
        self.writer.commit()?;
        self.writer.wait_merging_threads()?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(self.dir.path())? {
            let name = entry?.file_name().to_string_lossy().to_string();
            if !name.ends_with(".lock") {
                names.push(name);
            }
        }
        names.sort();
        Ok(IndexFiles {
            dir: self.dir.path().to_path_buf(),
            names,
            _temporary: Some(self.dir),
        })
    }
}

/// A finished index: the files to pack into an object.
pub struct IndexFiles {
    dir: PathBuf,
    names: Vec<String>,
    /// The temporary directory of an index built for one object, removed on drop.
    _temporary: Option<tempfile::TempDir>,
}

impl IndexFiles {
    /// The files of the committed index in `dir`, a directory owned elsewhere (the hot index of
    /// a WAL segment): `meta.json` and the files of the segments it names, nothing a merge left
    /// behind. Its schema must be this broker's.
    pub fn committed(dir: &Path) -> Result<IndexFiles, IndexError> {
        let index = Index::open(ScratchDirectory::open(dir)?)?;
        if !readable(&index.schema()) {
            return Err(IndexError::Schema(dir.display().to_string()));
        }
        let segments: Vec<String> = index
            .searchable_segment_metas()?
            .iter()
            .map(|meta| meta.id().uuid_string())
            .collect();
        // A segment's files are `<segment id>.<component>`; records are never deleted here, so
        // there are no delete files to pick a generation of.
        let mut names = vec!["meta.json".to_string()];
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            let of_a_segment = name
                .split_once('.')
                .is_some_and(|(id, _)| segments.iter().any(|s| s == id));
            if of_a_segment && !name.ends_with(".temp") {
                names.push(name);
            }
        }
        names.sort();
        Ok(IndexFiles {
            dir: dir.to_path_buf(),
            names,
            _temporary: None,
        })
    }

    /// The file names, sorted.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn open(&self, name: &str) -> std::io::Result<std::fs::File> {
        std::fs::File::open(self.dir.join(name))
    }
}

/// The document of one record. Keys, values and header values that are not UTF-8 are left out
/// of it (the records themselves are stored either way).
pub fn document(
    fields: &Fields,
    topic_id: &str,
    partition: i32,
    record: &CanonicalRecord,
) -> Document {
    let mut document = TantivyDocument::default();
    document.add_text(fields.topic_id, topic_id);
    document.add_i64(fields.partition, i64::from(partition));
    document.add_i64(fields.offset, record.offset);
    document.add_i64(fields.timestamp, record.timestamp);
    if let Some(key) = utf8(&record.key) {
        document.add_text(fields.key, key);
    }
    if let Some(value) = utf8(&record.value) {
        // The whole text at the JSON root: `value:term` searches every value alike.
        document.add_field_value(fields.value, &OwnedValue::Str(value.to_string()));
        if let Some(object) = json_object(value) {
            document.add_object(fields.value, object);
        }
    }
    let headers: BTreeMap<String, OwnedValue> = record
        .headers
        .iter()
        .filter_map(|h| {
            let name = std::str::from_utf8(&h.key).ok()?;
            let value = std::str::from_utf8(h.value.as_deref()?).ok()?;
            Some((name.to_string(), OwnedValue::Str(value.to_string())))
        })
        .collect();
    if !headers.is_empty() {
        document.add_object(fields.header, headers);
    }
    document
}

fn utf8(bytes: &Option<bytes::Bytes>) -> Option<&str> {
    std::str::from_utf8(bytes.as_deref()?).ok()
}

/// A value that is a JSON object, as Tantivy's document value.
fn json_object(value: &str) -> Option<BTreeMap<String, OwnedValue>> {
    if !value.trim_start().starts_with('{') {
        return None;
    }
    let parsed: serde_json::Map<String, serde_json::Value> = serde_json::from_str(value).ok()?;
    Some(
        parsed
            .into_iter()
            .map(|(k, v)| (k, OwnedValue::from(v)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record_batch::tests_support;
    use bytes::Bytes;
    use tantivy::collector::Count;
    use tantivy::query::QueryParser;

    #[test]
    fn records_are_found_by_key_value_header_and_offset_after_packing_and_reopening() {
        let mut records: Vec<_> = (0..50)
            .map(|i| {
                let value = Some(Bytes::from(if i % 10 == 0 {
                    format!("ERROR disk full {i}")
                } else {
                    format!("ok {i}")
                }));
                kafka_protocol::records::Record {
                    headers: [(
                        kafka_protocol::protocol::StrBytes::from_static_str("service"),
                        Some(Bytes::from(if i < 25 { "api" } else { "db" })),
                    )]
                    .into_iter()
                    .collect(),
                    ..tests_support::record(
                        i,
                        1_000 + i64::from(i),
                        Some(Bytes::from(format!("user-{}", i % 5))),
                        value,
                    )
                }
            })
            .collect();
        records.truncate(50);
        let batch = tests_support::encode(&records, kafka_protocol::records::Compression::Zstd);
        let canonical = CanonicalBatch::from_batch(&batch).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let mut builder = IndexBuilder::new(parent.path()).unwrap();
        builder.add_batch(&Uuid::nil(), 3, &canonical).unwrap();
        let files = builder.finish().unwrap();
        assert!(files.names().iter().any(|name| name == "meta.json"));
        let unpacked = unpack(&files);
        let index = Index::open_in_dir(unpacked.path()).unwrap();
        let searcher = index.reader().unwrap().searcher();
        let (_, fields) = schema();
        let parser = QueryParser::for_index(&index, vec![fields.key, fields.value]);
        let count = |q: &str| {
            searcher
                .search(&parser.parse_query(q).unwrap(), &Count)
                .unwrap()
        };
        assert_eq!(count("value:error"), 5);
        assert_eq!(count("key:\"user-3\""), 10);
        assert_eq!(count("header.service:db AND value:error"), 2);
        assert_eq!(count("offset:[10 TO 19]"), 10);
        assert_eq!(count("partition:3"), 50);
        // Single offsets and timestamps, which the index holds as fast fields only.
        let strata = |q: &str| {
            let query = crate::search::query::parse(q).unwrap();
            searcher.search(&query, &Count).unwrap()
        };
        assert_eq!(strata("offset:12"), 1);
        assert_eq!(strata("offset:12 OR offset:13 OR offset:99"), 2);
        assert_eq!(strata("offset: IN [3 5 7 99]"), 3);
        assert_eq!(strata("timestamp:1010 AND value:error"), 1);
        assert_eq!(strata("value:error AND NOT offset:10"), 4);
    }

    /// Objects written until 2026-12-02 have indexes whose offsets and timestamps are terms as
    /// well; they are still searched, with the same queries and filters.
    #[test]
    fn an_index_with_offsets_and_timestamps_as_terms_is_still_searched() {
        let records: Vec<_> = (0..20)
            .map(|i| {
                let value = if i % 2 == 0 { "error" } else { "ok" };
                tests_support::record(i, 1_000 + i64::from(i), None, Some(Bytes::from(value)))
            })
            .collect();
        let batch = tests_support::encode(&records, kafka_protocol::records::Compression::None);
        let canonical = CanonicalBatch::from_batch(&batch).unwrap();
        let earlier = schema_with_offset_terms();
        let (_, fields) = schema();
        let dir = tempfile::tempdir().unwrap();
        let directory = ScratchDirectory::open(dir.path()).unwrap();
        let index = Index::create(directory, earlier, IndexSettings::default()).unwrap();
        let mut writer: IndexWriter = index
            .writer_with_num_threads(1, limits::INDEX_WRITER_BYTES)
            .unwrap();
        for record in &canonical.records {
            let topic_id = Uuid::nil().to_string();
            writer
                .add_document(document(&fields, &topic_id, 2, record))
                .unwrap();
        }
        writer.commit().unwrap();
        IndexFiles::committed(dir.path()).expect("an earlier schema is readable");
        let range = crate::search::query::PartitionRange {
            partition: 2,
            start: 4,
            end: 14,
        };
        let query = crate::search::query::parse("value:error").unwrap();
        let filtered =
            crate::search::query::filtered(&*query, &Uuid::nil(), &[range], (Some(1_008), None));
        let searcher = index.reader().unwrap().searcher();
        // Even offsets 8, 10 and 12: in the offset range and from timestamp 1008.
        assert_eq!(searcher.search(&filtered, &Count).unwrap(), 3);
        let ranged = crate::search::query::parse("offset:[10 TO 19]").unwrap();
        assert_eq!(searcher.search(&ranged, &Count).unwrap(), 10);
        let single = crate::search::query::parse("offset:12 OR timestamp:1014").unwrap();
        assert_eq!(searcher.search(&single, &Count).unwrap(), 2);
    }

    #[test]
    fn an_index_with_another_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let directory = ScratchDirectory::open(dir.path()).unwrap();
        let positions = NumericOptions::default().set_indexed();
        let (other, _) = schema_with_positions(positions);
        let index = Index::create(directory, other, IndexSettings::default()).unwrap();
        let mut writer: IndexWriter = index
            .writer_with_num_threads(1, limits::INDEX_WRITER_BYTES)
            .unwrap();
        writer.commit().unwrap();
        assert!(matches!(
            IndexFiles::committed(dir.path()),
            Err(IndexError::Schema(_))
        ));
    }

    /// What a reader gets back from an object: the index files packed into it, laid out again.
    pub(super) fn unpack(files: &IndexFiles) -> tempfile::TempDir {
        let mut builder = crate::segment::object::ObjectBuilder::default();
        builder.add_index_files(files).unwrap();
        let (object, footer) = builder.finish().unwrap();
        let unpacked = tempfile::tempdir().unwrap();
        for file in &footer.index_files {
            let bytes = &object[file.start as usize..file.end as usize];
            std::fs::write(unpacked.path().join(&file.name), bytes).unwrap();
        }
        unpacked
    }
}

#[cfg(test)]
mod json_tests {
    use super::*;
    use crate::protocol::record_batch::tests_support;
    use bytes::Bytes;
    use tantivy::collector::Count;

    #[test]
    fn json_values_are_searchable_by_field_and_as_text() {
        let values = [
            r#"{"level": "error", "service": "api", "msg": "disk full", "status": 500}"#,
            r#"{"level": "info", "service": "api", "msg": "all good", "status": 200}"#,
            "plain error text",
            r#"[1, 2, "error"]"#,
        ];
        let records: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| tests_support::record(i as i32, 1_000, None, Some(Bytes::from(*v))))
            .collect();
        let batch = tests_support::encode(&records, kafka_protocol::records::Compression::None);
        let canonical = CanonicalBatch::from_batch(&batch).unwrap();
        let parent = tempfile::tempdir().unwrap();
        let mut builder = IndexBuilder::new(parent.path()).unwrap();
        builder.add_batch(&Uuid::nil(), 0, &canonical).unwrap();
        let unpacked = super::tests::unpack(&builder.finish().unwrap());
        let index = Index::open_in_dir(unpacked.path()).unwrap();
        let searcher = index.reader().unwrap().searcher();
        let count = |q: &str| {
            searcher
                .search(&crate::search::query::parse(q).unwrap(), &Count)
                .unwrap()
        };
        assert_eq!(count("value.level:error"), 1);
        assert_eq!(count("value.service:api"), 2);
        assert_eq!(count("value.status:500"), 1);
        assert_eq!(count("value:error"), 3, "the whole text of every value");
        assert_eq!(count("error"), 3, "value is a default field");
        assert_eq!(count("value.msg:\"disk full\""), 1);
        assert_eq!(count("value.level:error AND NOT value.service:api"), 0);
        assert_eq!(count("value:error AND NOT value.level:error"), 2);
        assert_eq!(
            count("level:error"),
            1,
            "a field not in the schema is a value field"
        );
        assert_eq!(count("value.level:info OR NOT value:error"), 1);
        assert_eq!(
            count("(value:error AND NOT value.level:error) OR value.status:200"),
            3
        );
    }
}
