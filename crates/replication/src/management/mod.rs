//! Publication and slot management, and the checks run before streaming, over an ordinary
//! SQL connection ([`walcast_postgres::connect_sql`]).

mod preflight;
mod publication;
mod slot;

pub use preflight::{ServerFacts, preflight};
pub use publication::{TableName, ensure_publication, publication_tables};
pub use slot::{SlotInfo, ensure_slot, slot_info};
