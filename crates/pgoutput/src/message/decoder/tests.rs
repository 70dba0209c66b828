use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::message::TupleValue;

/// A tiny big-endian message builder for hand-made fixtures.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn tag(t: u8) -> Self {
        B(vec![t])
    }
    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    fn i16(mut self, v: i16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: &str) -> Self {
        self.0.extend_from_slice(v.as_bytes());
        self.0.push(0);
        self
    }
    fn text(self, v: &str) -> Self {
        let mut b = self.u8(b't').u32(v.len() as u32);
        b.0.extend_from_slice(v.as_bytes());
        b
    }
}

fn text(v: &'static str) -> TupleValue {
    TupleValue::Text(Bytes::from_static(v.as_bytes()))
}

#[test]
fn begin_and_commit() {
    let mut d = Decoder::new(1);
    let begin = B::tag(b'B').u64(0x1_0000_0010).u64(99).u32(742).0;
    assert_eq!(
        d.decode(&begin),
        Ok(LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x1_0000_0010),
            commit_time: Timestamp::from_pg_micros(99),
            xid: 742
        }))
    );
    let commit = B::tag(b'C').u8(0).u64(10).u64(20).u64(30).0;
    assert_eq!(
        d.decode(&commit),
        Ok(LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(10),
            end_lsn: Lsn(20),
            commit_time: Timestamp::from_pg_micros(30)
        }))
    );
}

#[test]
fn origin_hand_built() {
    let raw = B::tag(b'O').u64(0x0000_0001_0200_0000).s("node_a").0;
    assert_eq!(
        Decoder::new(1).decode(&raw),
        Ok(LogicalMessage::Origin(Origin {
            commit_lsn: Lsn(0x0000_0001_0200_0000),
            name: "node_a".into()
        }))
    );
    let truncated = &raw[..raw.len() - 1];
    assert!(Decoder::new(1).decode(truncated).is_err(), "missing NUL");
}

#[test]
fn relation_with_columns() {
    let raw = B::tag(b'R')
        .u32(16384)
        .s("public")
        .s("users")
        .u8(b'f')
        .i16(2)
        .u8(1)
        .s("id")
        .u32(23)
        .u32(u32::MAX)
        .u8(0)
        .s("name")
        .u32(1043)
        .u32(68)
        .0;
    assert_eq!(
        Decoder::new(1).decode(&raw),
        Ok(LogicalMessage::Relation(Relation {
            xid: None,
            oid: 16384,
            namespace: "public".into(),
            name: "users".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: vec![
                Column {
                    is_key: true,
                    name: "id".into(),
                    type_oid: 23,
                    type_modifier: -1
                },
                Column {
                    is_key: false,
                    name: "name".into(),
                    type_oid: 1043,
                    type_modifier: 68
                },
            ],
        }))
    );
}

#[test]
fn update_variants() {
    let mut d = Decoder::new(1);
    let plain = B::tag(b'U').u32(5).u8(b'N').i16(1).text("a").0;
    let key = B::tag(b'U')
        .u32(5)
        .u8(b'K')
        .i16(1)
        .text("a")
        .u8(b'N')
        .i16(1)
        .text("b")
        .0;
    let full = B::tag(b'U')
        .u32(5)
        .u8(b'O')
        .i16(1)
        .text("a")
        .u8(b'N')
        .i16(1)
        .u8(b'u')
        .0;
    let tuple = |v| TupleData { columns: vec![v] };
    assert_eq!(
        d.decode(&plain),
        Ok(LogicalMessage::Update(Update {
            xid: None,
            relation_oid: 5,
            old: None,
            new: tuple(text("a"))
        }))
    );
    assert_eq!(
        d.decode(&key),
        Ok(LogicalMessage::Update(Update {
            xid: None,
            relation_oid: 5,
            old: Some(OldTuple::Key(tuple(text("a")))),
            new: tuple(text("b"))
        }))
    );
    assert_eq!(
        d.decode(&full),
        Ok(LogicalMessage::Update(Update {
            xid: None,
            relation_oid: 5,
            old: Some(OldTuple::Full(tuple(text("a")))),
            new: tuple(TupleValue::UnchangedToast)
        }))
    );
    let bad = B::tag(b'U').u32(5).u8(b'K').i16(0).u8(b'K').i16(0).0;
    assert!(d.decode(&bad).is_err(), "K must be followed by N");
}

#[test]
fn truncate_flags_and_huge_count() {
    let raw = B::tag(b'T').u32(2).u8(3).u32(10).u32(11).0;
    assert_eq!(
        Decoder::new(1).decode(&raw),
        Ok(LogicalMessage::Truncate(Truncate {
            xid: None,
            cascade: true,
            restart_identity: true,
            relation_oids: vec![10, 11]
        }))
    );
    // A hostile count must not allocate: it fails on the missing OIDs.
    let raw = B::tag(b'T').u32(i32::MAX as u32).u8(0).0;
    assert!(Decoder::new(1).decode(&raw).is_err());
}

#[test]
fn message_and_stream_xids() {
    let mut d = Decoder::new(2);
    let start = B::tag(b'S').u32(900).u8(1).0;
    assert_eq!(
        d.decode(&start),
        Ok(LogicalMessage::StreamStart(StreamStart {
            xid: 900,
            first_segment: true
        }))
    );
    assert!(d.in_stream);
    let msg = B::tag(b'M')
        .u32(900)
        .u8(1)
        .u64(77)
        .s("walcast")
        .u32(2)
        .u8(b'h')
        .u8(b'i')
        .0;
    assert_eq!(
        d.decode(&msg),
        Ok(LogicalMessage::Message(Message {
            xid: Some(900),
            transactional: true,
            lsn: Lsn(77),
            prefix: "walcast".into(),
            content: Bytes::from_static(b"hi")
        }))
    );
    let ins = B::tag(b'I').u32(900).u32(5).u8(b'N').i16(1).u8(b'n').0;
    assert_eq!(
        d.decode(&ins),
        Ok(LogicalMessage::Insert(Insert {
            xid: Some(900),
            relation_oid: 5,
            new: TupleData {
                columns: vec![TupleValue::Null]
            }
        }))
    );
    let ty = B::tag(b'Y').u32(900).u32(16400).s("public").s("mood").0;
    assert!(matches!(
        d.decode(&ty),
        Ok(LogicalMessage::Type(Type { xid: Some(900), .. }))
    ));
    let del = B::tag(b'D').u32(900).u32(5).u8(b'K').i16(0).0;
    assert!(matches!(
        d.decode(&del),
        Ok(LogicalMessage::Delete(Delete { xid: Some(900), .. }))
    ));
    assert!(d.decode(&start).is_err(), "nested Stream Start");
    assert!(d.in_stream, "failed decode leaves state alone");
    assert_eq!(d.decode(b"E"), Ok(LogicalMessage::StreamStop));
    assert!(!d.in_stream);
    assert!(d.decode(b"E").is_err(), "Stop without Start");
    // Outside the block the same Insert would be misread: the xid is now the OID.
    let ins_plain = B::tag(b'I').u32(5).u8(b'N').i16(0).0;
    assert!(matches!(
        d.decode(&ins_plain),
        Ok(LogicalMessage::Insert(Insert {
            xid: None,
            relation_oid: 5,
            ..
        }))
    ));
    let commit = B::tag(b'c').u32(900).u8(0).u64(1).u64(2).u64(3).0;
    assert_eq!(
        d.decode(&commit),
        Ok(LogicalMessage::StreamCommit(StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: Timestamp::from_pg_micros(3)
        }))
    );
    let abort = B::tag(b'A').u32(900).u32(901).0;
    assert_eq!(
        d.decode(&abort),
        Ok(LogicalMessage::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: None,
            abort_time: None
        }))
    );
    let abort16 = B::tag(b'A').u32(900).u32(901).u64(5).u64(6).0;
    assert!(matches!(
        d.decode(&abort16),
        Ok(LogicalMessage::StreamAbort(StreamAbort {
            abort_lsn: Some(Lsn(5)),
            abort_time: Some(6),
            ..
        }))
    ));
}

#[test]
fn protocol_v1_has_no_streams() {
    let mut d = Decoder::new(1);
    assert!(d.decode(&B::tag(b'S').u32(1).u8(1).0).is_err());
    assert!(!d.in_stream);
    assert!(d.decode(b"E").is_err());
}

#[test]
fn errors_name_context_and_offset() {
    let mut d = Decoder::new(1);
    let e = d
        .decode(&B::tag(b'B').u64(1).0)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "decoding Begin: at offset 9: unexpected end of input, expected Int64 commit timestamp"
        )
    );
    let e = d.decode(b"Z").err().map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            "decoding pgoutput message: at offset 0: unknown tag 'Z' (0x5a), expected a pgoutput message tag (B C O R Y I U D T M S E c A)"
        )
    );
    let e = d
        .decode(&B::tag(b'C').u8(0).u64(1).u64(2).u64(3).u8(9).0)
        .err();
    assert_eq!(e.map(|e| e.offset()), Some(26), "trailing byte");
    assert!(d.decode(b"").is_err());
}

#[test]
fn zero_copy_values() {
    let raw = Bytes::from(B::tag(b'I').u32(5).u8(b'N').i16(1).text("abc").0);
    let msg = Decoder::new(1).decode_bytes(raw.clone());
    let Ok(LogicalMessage::Insert(ins)) = msg else {
        unreachable!("insert expected, got {msg:?}");
    };
    let Some(TupleValue::Text(v)) = ins.new.columns.first() else {
        unreachable!("text expected");
    };
    assert_eq!(v.as_ptr(), raw[raw.len() - 3..].as_ptr());
}

fn any_decoder() -> impl Strategy<Value = Decoder> {
    (1u32..=4, any::<bool>()).prop_map(|(protocol_version, in_stream)| Decoder {
        protocol_version,
        in_stream,
    })
}

proptest! {
    #[test]
    fn decode_never_panics(mut d in any_decoder(), buf in proptest::collection::vec(any::<u8>(), 0..96)) {
        let before = d;
        if d.decode(&buf).is_err() {
            prop_assert_eq!(d, before);
        }
    }

    #[test]
    fn decode_never_panics_on_known_tags(
        mut d in any_decoder(),
        tag in proptest::sample::select(b"BCORYIUDTMSEcA".to_vec()),
        rest in proptest::collection::vec(any::<u8>(), 0..96),
    ) {
        let mut buf = vec![tag];
        buf.extend_from_slice(&rest);
        let _ = d.decode(&buf);
    }

    #[test]
    fn decode_never_panics_on_tuple_shaped_input(
        mut d in any_decoder(),
        tag in proptest::sample::select(b"IUD".to_vec()),
        kinds in proptest::collection::vec(
            prop_oneof![Just(b'n'), Just(b'u'), Just(b't'), Just(b'b'), any::<u8>()], 0..8),
        lens in proptest::collection::vec(0u32..8, 0..8),
    ) {
        let mut b = B::tag(tag).u32(1).u32(5).u8(if tag == b'I' { b'N' } else { b'K' }).i16(kinds.len() as i16);
        for (k, l) in kinds.iter().zip(lens.iter().chain(std::iter::repeat(&0))) {
            b = b.u8(*k);
            if *k == b't' || *k == b'b' {
                b = b.u32(*l);
                b.0.extend(std::iter::repeat_n(b'x', *l as usize));
            }
        }
        let _ = d.decode(&b.0);
    }
}
