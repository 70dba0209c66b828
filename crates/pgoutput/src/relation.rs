//! Table schemas as announced by Relation messages, and a cache of them.
//!
//! Insert, Update and Delete name their table only by OID; the columns come
//! from the most recent Relation message for that OID. Postgres resends a
//! Relation after every schema change (e.g. `ALTER TABLE ... ADD COLUMN`)
//! before the first change that uses it, so the cache simply replaces its
//! entry each time.

use std::collections::HashMap;

use crate::message::{Oid, Relation};

/// A table's `REPLICA IDENTITY`: what the old row of Update/Delete contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaIdentity {
    /// `d`: the primary key, if any.
    Default,
    /// `n`: nothing.
    Nothing,
    /// `f`: all columns.
    Full,
    /// `i`: the columns of a chosen unique index.
    Index,
}

impl ReplicaIdentity {
    /// Parses Postgres' `relreplident` byte.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'd' => Some(Self::Default),
            b'n' => Some(Self::Nothing),
            b'f' => Some(Self::Full),
            b'i' => Some(Self::Index),
            _ => None,
        }
    }

    /// Postgres' `relreplident` byte.
    pub fn as_byte(self) -> u8 {
        match self {
            Self::Default => b'd',
            Self::Nothing => b'n',
            Self::Full => b'f',
            Self::Index => b'i',
        }
    }
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity key.
    pub is_key: bool,
    /// Column name.
    pub name: String,
    /// Type OID, e.g. 23 for `int4`; see [`crate::value`].
    pub type_oid: Oid,
    /// `atttypmod`, e.g. the length of `varchar(n)` + 4; -1 if none.
    pub type_modifier: i32,
}

/// The latest [`Relation`] per relation OID.
#[derive(Debug, Clone, Default)]
pub struct RelationCache {
    relations: HashMap<Oid, Relation>,
}

impl RelationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `relation`, replacing and returning the previous schema for its
    /// OID, if any. The streamed-transaction `xid` is dropped: a schema is not
    /// tied to a transaction once announced.
    pub fn insert(&mut self, mut relation: Relation) -> Option<Relation> {
        relation.xid = None;
        self.relations.insert(relation.oid, relation)
    }

    /// The current schema of relation `oid`.
    pub fn get(&self, oid: Oid) -> Option<&Relation> {
        self.relations.get(&oid)
    }

    /// Forgets relation `oid`.
    pub fn remove(&mut self, oid: Oid) -> Option<Relation> {
        self.relations.remove(&oid)
    }

    /// Number of relations known.
    pub fn len(&self) -> usize {
        self.relations.len()
    }

    /// Whether no relation is known.
    pub fn is_empty(&self) -> bool {
        self.relations.is_empty()
    }

    /// All known relations, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Relation> {
        self.relations.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(oid: Oid, cols: &[&str]) -> Relation {
        Relation {
            xid: Some(7),
            oid,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: cols
                .iter()
                .map(|c| Column {
                    is_key: *c == "id",
                    name: (*c).into(),
                    type_oid: 23,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    #[test]
    fn replaces_entry_on_schema_change() {
        let mut cache = RelationCache::new();
        assert!(cache.is_empty());
        assert_eq!(cache.insert(rel(1, &["id"])), None);
        let old = cache.insert(rel(1, &["id", "extra"]));
        assert_eq!(old.map(|r| r.columns.len()), Some(1));
        let cur = cache.get(1);
        assert_eq!(cur.map(|r| r.columns.len()), Some(2));
        assert_eq!(cur.and_then(|r| r.xid), None, "xid is dropped");
        assert_eq!(cache.len(), 1);
        assert!(cache.get(2).is_none());
        assert!(cache.remove(1).is_some());
        assert_eq!(cache.iter().count(), 0);
    }

    #[test]
    fn replica_identity_bytes_round_trip() {
        for b in [b'd', b'n', b'f', b'i'] {
            assert_eq!(
                ReplicaIdentity::from_byte(b).map(ReplicaIdentity::as_byte),
                Some(b)
            );
        }
        assert_eq!(ReplicaIdentity::from_byte(b'x'), None);
    }
}
