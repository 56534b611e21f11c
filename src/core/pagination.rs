//! Cursor pagination shared by every list in the API.
//!
//! A page token is opaque to clients: base64url of a small JSON document holding the sort value
//! and id of the last item served, plus the ordering it belongs to, so a token cannot be replayed
//! against a different ordering. Keyset cursors stay correct while rows are being inserted.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::core::validation::Validator;

pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;

/// The value of a sort key of the last item a page served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", content = "v")]
pub enum SortValue {
    /// The item had no value for the key (sorted after all items that have one).
    Null,
    Float(f64),
    Int(i64),
    Time(DateTime<Utc>),
    Text(String),
}

/// Where the next page starts: after the item with this sort value and id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The ordering the cursor was made for.
    #[serde(rename = "o")]
    pub ordering: String,
    /// The sort values of the last item, one per sort key.
    #[serde(rename = "k", default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<SortValue>,
    #[serde(rename = "i")]
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a token made for `ordering`; any other token is refused.
    pub fn decode(token: &str, ordering: &str) -> Result<Self, String> {
        let invalid = || "is not a page token of this listing; start again without it".to_owned();
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| invalid())?;
        let cursor: Self = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        if cursor.ordering != ordering {
            return Err("belongs to a listing with a different order_by or filter".into());
        }
        Ok(cursor)
    }
}

/// Which page to fetch.
#[derive(Debug, Clone, PartialEq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl PageRequest {
    pub fn first(limit: u32) -> Self {
        Self { limit, after: None }
    }

    /// Checks `limit` (1 to 1000, default 100) and decodes `page_token` for `ordering`,
    /// recording what is wrong in `v`.
    pub fn parse(
        v: &mut Validator,
        limit: Option<u32>,
        page_token: Option<&str>,
        ordering: &str,
    ) -> Self {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        v.ensure(
            (1..=MAX_PAGE_SIZE).contains(&limit),
            "limit",
            format!("must be between 1 and {MAX_PAGE_SIZE}, got {limit}"),
        );
        let after = match page_token.filter(|t| !t.is_empty()) {
            Some(token) => v.check("page_token", Cursor::decode(token, ordering)),
            None => None,
        };
        Self { limit, after }
    }

    /// How many rows an adapter should fetch: one more than the page, to learn if more exist.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }
}

/// One page of results and the token for the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` fetched rows.
    pub fn from_overfetch(
        mut items: Vec<T>,
        request: &PageRequest,
        ordering: &str,
        cursor_of: impl Fn(&T) -> (Vec<SortValue>, Uuid),
    ) -> Self {
        let limit = request.limit as usize;
        let next_page_token = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|last| {
                let (keys, id) = cursor_of(last);
                Cursor {
                    ordering: ordering.to_owned(),
                    keys,
                    id,
                }
                .encode()
            })
        } else {
            None
        };
        Self {
            items,
            next_page_token,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_for_their_own_ordering_only() {
        let cursor = Cursor {
            ordering: "metrics.auc DESC".into(),
            keys: vec![SortValue::Float(0.5), SortValue::Null],
            id: Uuid::now_v7(),
        };

        let token = cursor.encode();

        assert_eq!(Cursor::decode(&token, "metrics.auc DESC"), Ok(cursor));
        assert!(Cursor::decode(&token, "start_time DESC").is_err());
        assert!(Cursor::decode("garbage!", "metrics.auc DESC").is_err());
    }

    #[test]
    fn overfetching_by_one_yields_a_next_token() {
        let request = PageRequest::first(2);
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();

        let page = Page::from_overfetch(ids.clone(), &request, "id", |id| (Vec::new(), *id));
        let last = Page::from_overfetch(ids[..2].to_vec(), &request, "id", |id| (Vec::new(), *id));

        assert_eq!(page.items, ids[..2]);
        let next = Cursor::decode(page.next_page_token.as_deref().unwrap(), "id").unwrap();
        assert_eq!(next.id, ids[1]);
        assert_eq!(last.next_page_token, None);
    }

    #[test]
    fn limits_outside_one_to_a_thousand_are_refused() {
        for (limit, ok) in [
            (Some(0), false),
            (Some(1001), false),
            (Some(1000), true),
            (None, true),
        ] {
            let mut v = Validator::new();

            let page = PageRequest::parse(&mut v, limit, None, "id");

            assert_eq!(v.is_empty(), ok, "{limit:?}");
            assert_eq!(page.limit, limit.unwrap_or(DEFAULT_PAGE_SIZE));
        }
    }
}
