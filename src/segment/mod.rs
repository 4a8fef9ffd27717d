//! The V2 segment format and what goes in it: `CanonicalBatch` (a batch decoded without loss,
//! stored with serde + bincode) and the record-batch codecs. Shared by the indexer, which
//! writes segments, and the reader, which serves batches from them.

pub mod canonical;
pub mod codec;
pub mod index;
pub mod object;
pub mod scratch_directory;
