//! Reads of `catalog_product_read` on one replica.
//!
//! Search matches `search_text` (the sink stores lower-cased sku, name and description there)
//! by substring (`ILIKE '%q%'`) or by word similarity (`q <% search_text`, pg_trgm, so a typo
//! still finds the product); both use the trigram GIN index. Substring matches rank first, then
//! closer words, then name and id, so pages are stable. The count and the page are read in one
//! REPEATABLE READ transaction, so `total` describes the same snapshot as `items`.

use deadpool_postgres::Client;
use tokio_postgres::IsolationLevel;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::product::{Product, utc};

const COLUMNS: &str = concat!(
    "product_id, sku, name, description, price::text, currency, is_active, version, NULL::text, ",
    utc!("updated_at")
);

/// One page of a search; `page` counts from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Search {
    pub(crate) q: String,
    pub(crate) page: u32,
    pub(crate) page_size: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) items: Vec<Product>,
    pub(crate) total: i64,
}

pub(crate) async fn get(client: &Client, id: Uuid) -> Result<Option<Product>> {
    let sql = format!("SELECT {COLUMNS} FROM catalog_product_read WHERE product_id = $1");
    let row = client
        .query_opt(&sql, &[&id])
        .await
        .map_err(Error::pg("reading a product"))?;
    row.as_ref().map(Product::from_row).transpose()
}

pub(crate) async fn search(client: &mut Client, s: &Search) -> Result<Page> {
    let limit = i64::from(s.page_size);
    let offset = i64::from(s.page.saturating_sub(1)) * limit;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(Error::pg("starting a read transaction"))?;
    let q = s.q.trim().to_lowercase();
    let (total, rows) = if q.is_empty() {
        let total = tx
            .query_one("SELECT count(*) FROM catalog_product_read", &[])
            .await;
        let page = format!(
            "SELECT {COLUMNS} FROM catalog_product_read ORDER BY name, product_id \
             LIMIT $1 OFFSET $2"
        );
        (total, tx.query(&page, &[&limit, &offset]).await)
    } else {
        let pattern = like_pattern(&q);
        let total = tx
            .query_one(
                "SELECT count(*) FROM catalog_product_read \
                 WHERE search_text ILIKE $2 OR $1 <% search_text",
                &[&q, &pattern],
            )
            .await;
        let page = format!(
            "SELECT {COLUMNS} FROM catalog_product_read \
             WHERE search_text ILIKE $2 OR $1 <% search_text \
             ORDER BY search_text ILIKE $2 DESC, word_similarity($1, search_text) DESC, \
             name, product_id LIMIT $3 OFFSET $4"
        );
        (
            total,
            tx.query(&page, &[&q, &pattern, &limit, &offset]).await,
        )
    };
    let total: i64 = total
        .and_then(|r| r.try_get(0))
        .map_err(Error::pg("counting products"))?;
    let items = rows
        .map_err(Error::pg("searching products"))?
        .iter()
        .map(Product::from_row)
        .collect::<Result<Vec<_>>>()?;
    tx.commit()
        .await
        .map_err(Error::pg("ending a read transaction"))?;
    Ok(Page { items, total })
}

/// `%q%` with LIKE's wildcards in `q` escaped, so `50%` searches for "50%".
fn like_pattern(q: &str) -> String {
    let mut p = String::with_capacity(q.len() + 2);
    p.push('%');
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_pattern("mug"), "%mug%");
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
    }
}
