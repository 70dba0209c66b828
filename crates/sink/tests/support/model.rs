//! A model of the catalog: it makes event streams and knows the read rows they must produce,
//! computed independently of the sink (no guards needed: the model applies its own events in
//! the order it made them).

use std::collections::BTreeMap;

use serde_json::{Value, json};
use uuid::Uuid;

/// One catalog event as the source publishes it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: Uuid,
    pub event_type: &'static str,
    pub product: Uuid,
    pub version: i32,
    /// µs since the Unix epoch.
    pub occurred_at: i64,
    pub payload: Value,
    /// `event_version` header, when the event is of an older schema.
    pub event_version: Option<u32>,
}

impl Event {
    /// The same event with a new id and other content: what a buggy or replayed producer
    /// would send with an older version.
    pub fn with_new_id(&self) -> Event {
        Event {
            id: Uuid::new_v4(),
            ..self.clone()
        }
    }
}

#[derive(Debug, Clone)]
struct Row {
    sku: String,
    name: String,
    description: Option<String>,
    cents: i64,
    currency: String,
    active: bool,
    version: i32,
    occurred_at: i64,
}

/// Deterministic xorshift, so a failing stream can be reproduced from its seed.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Debug)]
pub struct Catalog {
    rows: BTreeMap<Uuid, Row>,
    clock: i64,
    serial: u64,
    pub rng: Rng,
}

const WORDS: &[&str] = &[
    "Mug", "Lamp", "Chair", "Desk", "Kettle", "Plant", "Clock", "Shelf",
];

impl Catalog {
    pub fn new(seed: u64) -> Catalog {
        Catalog {
            rows: BTreeMap::new(),
            clock: 1_780_000_000_000_000,
            serial: 0,
            rng: Rng::new(seed),
        }
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1 + self.rng.below(5_000) as i64;
        self.clock
    }

    fn word(&mut self) -> &'static str {
        WORDS[self.rng.below(WORDS.len() as u64) as usize]
    }

    /// A new product; `v1` uses the old ProductCreated shape (`title`, no `isActive`).
    pub fn create(&mut self, v1: bool) -> Event {
        self.serial += 1;
        let id = Uuid::new_v4();
        let at = self.tick();
        let row = Row {
            sku: format!("SKU-{:06}", self.serial),
            name: format!("{} {}", self.word(), self.serial),
            description: (self.rng.below(3) > 0)
                .then(|| format!("A fine {}", self.word().to_lowercase())),
            cents: 100 + self.rng.below(100_000) as i64,
            currency: "EUR".into(),
            active: true,
            version: 1,
            occurred_at: at,
        };
        let mut payload = json!({
            "productId": id, "sku": row.sku, "description": row.description,
            "price": price(row.cents), "currency": row.currency, "version": 1,
        });
        if v1 {
            payload["title"] = json!(row.name);
        } else {
            payload["name"] = json!(row.name);
            payload["isActive"] = json!(true);
        }
        self.rows.insert(id, row);
        Event {
            id: Uuid::new_v4(),
            event_type: "ProductCreated",
            product: id,
            version: 1,
            occurred_at: at,
            payload,
            event_version: v1.then_some(1),
        }
    }

    /// A random change of a random live product (or a new product when there is none).
    pub fn change(&mut self) -> Event {
        if self.rows.is_empty() || self.rng.below(8) == 0 {
            let v1 = self.rng.below(4) == 0;
            return self.create(v1);
        }
        let pick = self.rng.below(self.rows.len() as u64) as usize;
        let id = *self.rows.keys().nth(pick).unwrap_or(&Uuid::nil());
        let kind = self.rng.below(40);
        let at = self.tick();
        let word = self.word();
        let cents = 100 + self.rng.below(100_000) as i64;
        let Some(row) = self.rows.get_mut(&id) else {
            return self.create(false);
        };
        row.version += 1;
        row.occurred_at = at;
        let version = row.version;
        let (event_type, payload) = match kind {
            0..=13 => {
                row.name = format!("{word} {}", &row.sku[4..]);
                row.description =
                    (version % 3 != 0).then(|| format!("Now {} v{version}", word.to_lowercase()));
                (
                    "ProductUpdated",
                    json!({"productId": id, "name": row.name, "description": row.description, "version": version}),
                )
            }
            14..=29 => {
                row.cents = cents;
                (
                    "ProductPriceChanged",
                    json!({"productId": id, "price": price(cents), "currency": row.currency, "version": version}),
                )
            }
            30..=37 => {
                row.active = !row.active;
                let t = if row.active {
                    "ProductActivated"
                } else {
                    "ProductDeactivated"
                };
                (t, json!({"productId": id, "version": version}))
            }
            _ => {
                self.rows.remove(&id);
                (
                    "ProductDeleted",
                    json!({"productId": id, "version": version}),
                )
            }
        };
        Event {
            id: Uuid::new_v4(),
            event_type,
            product: id,
            version,
            occurred_at: at,
            payload,
            event_version: None,
        }
    }

    /// The rows every target must hold, formatted like [`super::ROWS_SQL`], by product id.
    pub fn expected(&self) -> Vec<String> {
        self.rows
            .iter()
            .map(|(id, r)| {
                let mut search = vec![r.sku.clone(), r.name.clone()];
                search.extend(r.description.clone());
                format!(
                    "{id}|{}|{}|{}|{}|{}|{}|{}|{}|{}|t",
                    r.sku,
                    r.name,
                    r.description.as_deref().unwrap_or("∅"),
                    price(r.cents),
                    r.currency,
                    if r.active { "t" } else { "f" },
                    search.join(" ").to_lowercase(),
                    r.version,
                    r.occurred_at,
                )
            })
            .collect()
    }
}

pub fn price(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}
