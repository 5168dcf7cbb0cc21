//! Cursor pagination: `?limit=` (1–200, default 50) and `?cursor=`, answered with
//! `{"items": [...], "next_cursor": "…" | null}`.
//!
//! Lists are ordered by id. Ids are UUIDv7, so that is creation order, and an item created
//! while a client walks the pages lands after every existing one: the walk sees each item
//! that existed when it started exactly once. The cursor is opaque to clients:
//! base64url of `v1:<last id of the page>`.

use base64::Engine;
use serde::Deserialize;
use utoipa::IntoParams;

use super::problem::Problem;

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 200;

/// The paging parameters of every list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; absent for the first page.
    pub cursor: Option<String>,
}

/// A checked page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// Items after this id.
    pub after: Option<String>,
}

impl PageQuery {
    pub fn check(&self) -> Result<PageRequest, Problem> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Problem::bad_request(
                "invalid_query",
                format!("limit must be between 1 and {MAX_LIMIT}."),
            ));
        }
        let after = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                Problem::bad_request(
                    "invalid_cursor",
                    "The cursor is not one this API gave out; start again without it.",
                )
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

pub fn encode_cursor(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{last_id}"))
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let id = text.strip_prefix("v1:")?;
    let plausible = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    plausible.then(|| id.to_string())
}

/// One page out of `rows` that the query fetched with `LIMIT limit + 1`, ordered by id:
/// the page and the cursor of the next one (None on the last page).
pub fn finish<T>(
    mut rows: Vec<T>,
    req: &PageRequest,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let more = rows.len() > req.limit as usize;
    rows.truncate(req.limit as usize);
    let next = if more {
        rows.last().map(|last| encode_cursor(id(last)))
    } else {
        None
    };
    (rows, next)
}

/// A page of items already in memory (sorted by id here): for short lists such as plans.
pub fn page_in_memory<T>(
    mut items: Vec<T>,
    req: &PageRequest,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    items.sort_by(|a, b| id(a).cmp(id(b)));
    let rows: Vec<T> = items
        .into_iter()
        .filter(|i| req.after.as_deref().is_none_or(|after| id(i) > after))
        .take(req.limit as usize + 1)
        .collect();
    finish(rows, req, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_junk_is_refused() {
        let id = "0193a3c2-7b1e-7000-8000-000000000001";
        assert_eq!(decode_cursor(&encode_cursor(id)).as_deref(), Some(id));
        assert_eq!(decode_cursor("not base64!"), None);
        assert_eq!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v2:x")),
            None
        );
        assert_eq!(
            decode_cursor(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:' OR 1=1")),
            None
        );
    }

    #[test]
    fn limits_default_to_50_and_stay_within_1_to_200() {
        assert_eq!(PageQuery::default().check().unwrap().limit, 50);
        for bad in [0, 201] {
            let q = PageQuery {
                limit: Some(bad),
                cursor: None,
            };
            assert_eq!(q.check().unwrap_err().code, "invalid_query");
        }
        let q = PageQuery {
            limit: None,
            cursor: Some("zzz".into()),
        };
        assert_eq!(q.check().unwrap_err().code, "invalid_cursor");
    }

    #[test]
    fn walking_pages_sees_every_item_once_even_when_items_are_added() {
        let mut items: Vec<String> = (10..15).map(|i| format!("id-{i}")).collect();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let req = PageQuery {
                limit: Some(2),
                cursor: cursor.clone(),
            }
            .check()
            .unwrap();
            let (page, next) = page_in_memory(items.clone(), &req, |s| s.as_str());
            seen.extend(page);
            // Newer ids sort after every existing one.
            if seen.len() < 6 {
                items.push(format!("id-{}", 20 + seen.len()));
            }
            match next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        let originals: Vec<String> = (10..15).map(|i| format!("id-{i}")).collect();
        for o in &originals {
            assert_eq!(seen.iter().filter(|s| *s == o).count(), 1, "{o}");
        }
        let mut dedup = seen.clone();
        dedup.dedup();
        assert_eq!(dedup, seen);
    }

    #[test]
    fn the_last_page_has_no_cursor() {
        let req = PageQuery {
            limit: Some(3),
            cursor: None,
        }
        .check()
        .unwrap();
        let (page, next) = page_in_memory(vec!["a", "b", "c"], &req, |s| s);
        assert_eq!(page.len(), 3);
        assert_eq!(next, None);
        let (_, next) = page_in_memory(vec!["a", "b", "c", "d"], &req, |s| s);
        assert_eq!(decode_cursor(&next.unwrap()).as_deref(), Some("c"));
    }
}
