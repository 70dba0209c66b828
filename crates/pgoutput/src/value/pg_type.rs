//! Built-in type OIDs (from `pg_type.dat`) that [`super::text_to_json`] knows.

use crate::message::Oid;

pub const BOOL: Oid = 16;
pub const BYTEA: Oid = 17;
pub const CHAR: Oid = 18;
pub const NAME: Oid = 19;
pub const INT8: Oid = 20;
pub const INT2: Oid = 21;
pub const INT4: Oid = 23;
pub const TEXT: Oid = 25;
pub const OID: Oid = 26;
pub const JSON: Oid = 114;
pub const FLOAT4: Oid = 700;
pub const FLOAT8: Oid = 701;
pub const BPCHAR: Oid = 1042;
pub const VARCHAR: Oid = 1043;
pub const DATE: Oid = 1082;
pub const TIME: Oid = 1083;
pub const TIMESTAMP: Oid = 1114;
pub const TIMESTAMPTZ: Oid = 1184;
pub const TIMETZ: Oid = 1266;
pub const NUMERIC: Oid = 1700;
pub const UUID: Oid = 2950;
pub const JSONB: Oid = 3802;

pub const JSON_ARRAY: Oid = 199;
pub const BOOL_ARRAY: Oid = 1000;
pub const BYTEA_ARRAY: Oid = 1001;
pub const CHAR_ARRAY: Oid = 1002;
pub const NAME_ARRAY: Oid = 1003;
pub const INT2_ARRAY: Oid = 1005;
pub const INT4_ARRAY: Oid = 1007;
pub const TEXT_ARRAY: Oid = 1009;
pub const BPCHAR_ARRAY: Oid = 1014;
pub const VARCHAR_ARRAY: Oid = 1015;
pub const INT8_ARRAY: Oid = 1016;
pub const FLOAT4_ARRAY: Oid = 1021;
pub const FLOAT8_ARRAY: Oid = 1022;
pub const OID_ARRAY: Oid = 1028;
pub const TIMESTAMP_ARRAY: Oid = 1115;
pub const DATE_ARRAY: Oid = 1182;
pub const TIME_ARRAY: Oid = 1183;
pub const TIMESTAMPTZ_ARRAY: Oid = 1185;
pub const NUMERIC_ARRAY: Oid = 1231;
pub const TIMETZ_ARRAY: Oid = 1270;
pub const UUID_ARRAY: Oid = 2951;
pub const JSONB_ARRAY: Oid = 3807;

/// The element type of a supported array type, e.g. `INT4` for `INT4_ARRAY`.
pub fn array_element(array_oid: Oid) -> Option<Oid> {
    Some(match array_oid {
        BOOL_ARRAY => BOOL,
        BYTEA_ARRAY => BYTEA,
        CHAR_ARRAY => CHAR,
        NAME_ARRAY => NAME,
        INT2_ARRAY => INT2,
        INT4_ARRAY => INT4,
        TEXT_ARRAY => TEXT,
        BPCHAR_ARRAY => BPCHAR,
        VARCHAR_ARRAY => VARCHAR,
        INT8_ARRAY => INT8,
        FLOAT4_ARRAY => FLOAT4,
        FLOAT8_ARRAY => FLOAT8,
        OID_ARRAY => OID,
        TIMESTAMP_ARRAY => TIMESTAMP,
        DATE_ARRAY => DATE,
        TIME_ARRAY => TIME,
        TIMESTAMPTZ_ARRAY => TIMESTAMPTZ,
        NUMERIC_ARRAY => NUMERIC,
        TIMETZ_ARRAY => TIMETZ,
        UUID_ARRAY => UUID,
        JSON_ARRAY => JSON,
        JSONB_ARRAY => JSONB,
        _ => return None,
    })
}
