//! Feeds arbitrary bytes to every parser in walcast-pgoutput: none may panic.
//!
//! Run from `crates/pgoutput`: `cargo +nightly fuzz run decode -- -max_total_time=60`
#![no_main]

use libfuzzer_sys::fuzz_target;
use walcast_pgoutput::message::{Decoder, LogicalMessage};
use walcast_pgoutput::relation::RelationCache;
use walcast_pgoutput::replication::{ReplicationMessage, StandbyStatusUpdate};
use walcast_pgoutput::value::{parse_array_literal, pg_type, text_to_json, tuple_to_json};

const OIDS: &[u32] = &[
    pg_type::BOOL,
    pg_type::BYTEA,
    pg_type::INT4,
    pg_type::OID,
    pg_type::FLOAT8,
    pg_type::JSONB,
    pg_type::DATE,
    pg_type::TIME,
    pg_type::TIMETZ,
    pg_type::TIMESTAMP,
    pg_type::TIMESTAMPTZ,
    pg_type::INT4_ARRAY,
    pg_type::TEXT_ARRAY,
    pg_type::BYTEA_ARRAY,
    pg_type::TIMESTAMPTZ_ARRAY,
    pg_type::JSONB_ARRAY,
];

fn decoders() -> [Decoder; 4] {
    [(1, false), (1, true), (2, false), (2, true)].map(|(protocol_version, in_stream)| Decoder {
        protocol_version,
        in_stream,
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = StandbyStatusUpdate::parse(data);
    if let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(data) {
        for mut d in decoders() {
            let _ = d.decode_bytes(x.data.clone());
        }
    }
    for mut d in decoders() {
        let _ = d.decode(data);
    }

    // A session: messages separated by 0xFF, decoded in order by one
    // decoder, with rows turned into JSON through the relation cache.
    let mut d = Decoder::new(2);
    let mut cache = RelationCache::new();
    for msg in data.split(|b| *b == 0xff) {
        match d.decode(msg) {
            Ok(LogicalMessage::Relation(r)) => {
                cache.insert(r);
            }
            Ok(LogicalMessage::Insert(i)) => {
                if let Some(rel) = cache.get(i.relation_oid) {
                    let _ = tuple_to_json(rel, &i.new);
                }
            }
            _ => {}
        }
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_array_literal(text);
        for oid in OIDS {
            let _ = text_to_json(*oid, text);
        }
    }
});
