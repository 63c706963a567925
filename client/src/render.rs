// Over 500 lines: every answer's JSON written by one serializer, and the tests that hold it to the documented shapes.
//! Answers that carry users, written as JSON straight from the stored records.
//!
//! Every such answer says where its users came from: the version, when its
//! batch was produced and went live, its age, and whether that age is past
//! the dataset's maximum ([`Freshness`]). A batch read's users all come from
//! that one version.
//!
//! Answers are written through serde's serializer from borrowed parts (item
//! ids, the other fields' stored JSON text), never as a `serde_json::Value`
//! tree: a batch of hundreds of users would otherwise spend more time
//! building and dropping maps than Redis spends finding the users.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::ser::{Error as _, Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use shared::record::{ItemId, Stored};
use shared::version_id::rfc3339_ms;

use crate::{BatchId, Error, Select, View};

/// How fresh the version an answer comes from is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    /// When its batch was produced: the upload's S3 event time.
    pub produced_ms: Option<u64>,
    /// When it went live.
    pub live_ms: Option<u64>,
    /// The dataset's maximum age, if it has one.
    pub max_age: Option<Duration>,
    pub now_ms: u64,
}

impl Freshness {
    /// Seconds since the batch was produced.
    pub fn age_s(&self) -> Option<u64> {
        self.produced_ms
            .map(|p| self.now_ms.saturating_sub(p) / 1000)
    }

    /// Whether the batch is older than the dataset's maximum age.
    pub fn is_stale(&self) -> bool {
        match (self.max_age, self.produced_ms) {
            (Some(max), Some(p)) => self.now_ms.saturating_sub(p) > max.as_millis() as u64,
            _ => false,
        }
    }
}

impl Serialize for Freshness {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("producedAt", &self.produced_ms.map(rfc3339_ms))?;
        m.serialize_entry("liveSince", &self.live_ms.map(rfc3339_ms))?;
        m.serialize_entry("ageSeconds", &self.age_s())?;
        m.serialize_entry("maxAgeSeconds", &self.max_age.map(|d| d.as_secs()))?;
        m.serialize_entry("stale", &self.is_stale())?;
        m.end()
    }
}

/// Where an answer's users came from: one version of one dataset.
#[derive(Debug, Clone)]
pub struct Served<'a> {
    pub dataset: &'a str,
    pub version: &'a str,
    pub freshness: Freshness,
}

impl Served<'_> {
    /// The entries every answer with users opens with.
    fn write_head<M: SerializeMap>(&self, m: &mut M, with_dataset: bool) -> Result<(), M::Error> {
        if with_dataset {
            m.serialize_entry("dataset", self.dataset)?;
        }
        m.serialize_entry("version", self.version)?;
        m.serialize_entry("freshness", &self.freshness)
    }
}

/// A user's id as the batch wrote it: a number for integer ids.
struct UserId<'a> {
    id: &'a str,
    is_int: bool,
}

impl Serialize for UserId<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.id.parse::<i64>() {
            Ok(n) if self.is_int => s.serialize_i64(n),
            _ => s.serialize_str(self.id),
        }
    }
}

/// The rank a view asks for, as an index into a list of `n` items, or the
/// `rank_out_of_range` error.
fn rank_index(rank: NonZeroU32, n: usize) -> Result<usize, Error> {
    let r = rank.get() as usize - 1;
    match r < n {
        true => Ok(r),
        false => Err(Error::not_found(
            "rank_out_of_range",
            format!("rank {rank} is past the end of the list ({n} items)"),
        )),
    }
}

/// Which part of a per-item list a view keeps.
#[derive(Clone, Copy)]
enum Cut {
    One(usize),
    First(usize),
}

/// One user's record, cut to a view, decoded and checked before anything is
/// written so that a record's problem is the user's status, not a broken
/// answer.
struct UserPart<'v, 'a> {
    view: &'v View,
    items: &'v [ItemId<'a>],
    cut: Cut,
    other: Vec<(Cow<'v, str>, &'v RawValue)>,
}

impl<'v, 'a> UserPart<'v, 'a> {
    fn new(view: &'v View, stored: &'v Stored<'a>) -> Result<Self, Error> {
        let n = stored.items.len();
        let cut = match view.select {
            Select::Rank(rank) => Cut::One(rank_index(rank, n)?),
            Select::Limit(k) => Cut::First((k.get() as usize).min(n)),
            Select::All => Cut::First(n),
        };
        let other = stored.other_fields().map_err(|_| Error::internal())?;
        Ok(UserPart {
            view,
            items: &stored.items,
            cut,
            other,
        })
    }

    /// The item list (or one item), its count, and the other fields, those
    /// holding one value per item cut the same way.
    fn write<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        let items = self.view.wants("items");
        match self.cut {
            Cut::One(r) => {
                m.serialize_entry("rank", &(r + 1))?;
                if items {
                    m.serialize_entry("item", &self.items[r])?;
                }
            }
            Cut::First(k) if items => {
                m.serialize_entry("items", &self.items[..k])?;
                m.serialize_entry("count", &k)?;
            }
            Cut::First(_) => {}
        }
        m.serialize_entry("fields", &OtherFields(self))
    }
}

/// A user's other fields that the view wants.
struct OtherFields<'p, 'v, 'a>(&'p UserPart<'v, 'a>);

impl Serialize for OtherFields<'_, '_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let part = self.0;
        let n = part.items.len();
        let mut m = s.serialize_map(None)?;
        for (name, raw) in part.other.iter().filter(|(name, _)| part.view.wants(name)) {
            let aligned = match raw.get().starts_with('[') {
                true => serde_json::from_str::<Vec<&RawValue>>(raw.get())
                    .ok()
                    .filter(|a| a.len() == n),
                false => None,
            };
            match (aligned, part.cut) {
                (Some(a), Cut::One(r)) => m.serialize_entry(name, a[r])?,
                (Some(a), Cut::First(k)) => m.serialize_entry(name, &a[..k])?,
                (None, _) => m.serialize_entry(name, raw)?,
            }
        }
        m.end()
    }
}

fn json_response<T: Serialize>(answer: &T) -> Result<String, Error> {
    serde_json::to_string(answer).map_err(|e| {
        tracing::error!(error = %e, "answer does not serialize");
        Error::internal()
    })
}

/// The answer to `/?userId=&rank=` for a found user: the original sentence,
/// or JSON with the version and its freshness.
pub fn render_legacy(
    user: &str,
    rank: NonZeroU32,
    text: bool,
    items_field: &str,
    served: &Served<'_>,
    stored: &Stored<'_>,
) -> Result<String, Error> {
    let item = &stored.items[rank_index(rank, stored.items.len())?];
    if text {
        let item = match item {
            ItemId::Int(n) => n.to_string(),
            ItemId::Str(s) => s.to_string(),
        };
        return Ok(format!(
            "The number {rank} recommended movie for user {user} is {item}"
        ));
    }
    struct Legacy<'x> {
        user: UserId<'x>,
        rank: NonZeroU32,
        items_field: &'x str,
        item: &'x ItemId<'x>,
        served: &'x Served<'x>,
    }
    impl Serialize for Legacy<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("userId", &self.user)?;
            m.serialize_entry("rank", &self.rank)?;
            m.serialize_entry(self.items_field, self.item)?;
            self.served.write_head(&mut m, false)?;
            m.end()
        }
    }
    let user = UserId {
        id: user,
        is_int: stored.user_is_int,
    };
    json_response(&Legacy {
        user,
        rank,
        items_field,
        item,
        served,
    })
}

/// The answer to `GET /v1/{dataset}/users/{userId}` for a found user.
pub fn render_user(
    user: &str,
    view: &View,
    served: &Served<'_>,
    stored: &Stored<'_>,
) -> Result<String, Error> {
    struct One<'x, 'a> {
        user: UserId<'x>,
        part: UserPart<'x, 'a>,
        served: &'x Served<'x>,
    }
    impl Serialize for One<'_, '_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            m.serialize_entry("dataset", self.served.dataset)?;
            m.serialize_entry("userId", &self.user)?;
            self.served.write_head(&mut m, false)?;
            self.part.write(&mut m)?;
            m.end()
        }
    }
    let part = UserPart::new(view, stored)?;
    json_response(&One {
        user: UserId {
            id: user,
            is_int: stored.user_is_int,
        },
        part,
        served,
    })
}

/// The answer to a batch read: one result per requested id, in order, each
/// with its status; `records[i]` is the stored record of `users[i]`, if the
/// version holds that user.
pub fn render_batch(
    users: &[BatchId],
    records: &[Option<Stored<'_>>],
    view: &View,
    served: &Served<'_>,
) -> Result<String, Error> {
    struct Batch<'x, 'a> {
        users: &'x [BatchId],
        records: &'x [Option<Stored<'a>>],
        view: &'x View,
        served: &'x Served<'x>,
    }
    impl Serialize for Batch<'_, '_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            self.served.write_head(&mut m, true)?;
            m.serialize_entry("count", &self.users.len())?;
            m.serialize_entry(
                "found",
                &self.records.iter().filter(|r| r.is_some()).count(),
            )?;
            m.serialize_entry("results", &Results(self))?;
            m.end()
        }
    }
    struct Results<'b, 'x, 'a>(&'b Batch<'x, 'a>);
    impl Serialize for Results<'_, '_, '_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let batch = self.0;
            s.collect_seq(
                batch
                    .users
                    .iter()
                    .zip(batch.records)
                    .map(|(asked, record)| BatchResult {
                        asked,
                        record: record.as_ref(),
                        view: batch.view,
                    }),
            )
        }
    }
    struct BatchResult<'x, 'a> {
        asked: &'x BatchId,
        record: Option<&'x Stored<'a>>,
        view: &'x View,
    }
    impl Serialize for BatchResult<'_, '_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut m = s.serialize_map(None)?;
            let Some(stored) = self.record else {
                m.serialize_entry("userId", &self.asked.given)?;
                m.serialize_entry("status", "unknown_user")?;
                return m.end();
            };
            m.serialize_entry(
                "userId",
                &UserId {
                    id: &self.asked.id,
                    is_int: stored.user_is_int,
                },
            )?;
            match UserPart::new(self.view, stored) {
                Ok(part) => {
                    m.serialize_entry("status", "found")?;
                    part.write(&mut m)?;
                }
                Err(e) if e.status == 404 => {
                    m.serialize_entry("status", e.code)?;
                    m.serialize_entry("message", &e.message)?;
                }
                Err(e) => return Err(S::Error::custom(e.message)),
            }
            m.end()
        }
    }
    json_response(&Batch {
        users,
        records,
        view,
        served,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap()
    }

    fn served() -> Served<'static> {
        Served {
            dataset: "d",
            version: "v",
            freshness: Freshness {
                produced_ms: Some(1000),
                live_ms: Some(2000),
                max_age: None,
                now_ms: 61_000,
            },
        }
    }

    #[test]
    fn legacy_text_answer_matches_the_original_sentence() {
        let stored = Stored::decode(br#"{"u":1,"i":[2012,553,780]}"#).unwrap();
        let resp = render_legacy("1", nz(1), true, "movieId", &served(), &stored).unwrap();
        assert_eq!(resp, "The number 1 recommended movie for user 1 is 2012");
        assert_eq!(
            render_legacy("1", nz(4), false, "movieId", &served(), &stored)
                .unwrap_err()
                .status,
            404
        );
        let v: Value = serde_json::from_str(
            &render_legacy("1", nz(2), false, "movieId", &served(), &stored).unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                v["userId"].clone(),
                v["movieId"].clone(),
                v["freshness"]["ageSeconds"].clone()
            ),
            (json!(1), json!(553), json!(60))
        );
        let strings = Stored::decode(br#"{"u":"a","i":["x\"y","z"]}"#).unwrap();
        assert_eq!(
            render_legacy("a", nz(1), true, "movieId", &served(), &strings).unwrap(),
            "The number 1 recommended movie for user a is x\"y"
        );
    }

    #[test]
    fn aligned_fields_follow_rank_and_limit_and_projection_keeps_what_was_asked() {
        let stored = Stored::decode(
            br#"{"u":"a","i":[10,20,30],"x":{"scores":[0.9,0.5,0.1],"model":"als","pair":[1,2]}}"#,
        )
        .unwrap();
        let answer = |view: View| -> Value {
            serde_json::from_str(&render_user("a", &view, &served(), &stored).unwrap()).unwrap()
        };
        let v = answer(View {
            select: Select::Rank(nz(2)),
            fields: None,
        });
        assert_eq!(
            (v["item"].clone(), v["rank"].clone(), v["fields"].clone()),
            (
                json!(20),
                json!(2),
                json!({"scores": 0.5, "model": "als", "pair": [1, 2]})
            )
        );
        let v = answer(View {
            select: Select::Limit(nz(2)),
            fields: None,
        });
        assert_eq!(
            (
                v["items"].clone(),
                v["fields"]["scores"].clone(),
                v["count"].clone()
            ),
            (json!([10, 20]), json!([0.9, 0.5]), json!(2))
        );
        let v = answer(View {
            select: Select::Limit(nz(2)),
            fields: Some(vec!["scores".into()]),
        });
        assert_eq!(
            (v.get("items"), v.get("count"), v["fields"].clone()),
            (None, None, json!({"scores": [0.9, 0.5]}))
        );
        let v = answer(View {
            select: Select::All,
            fields: Some(vec!["items".into(), "nope".into()]),
        });
        assert_eq!(
            (v["items"].clone(), v["fields"].clone()),
            (json!([10, 20, 30]), json!({}))
        );
        assert_eq!(
            (
                v["dataset"].clone(),
                v["version"].clone(),
                v["freshness"]["producedAt"].clone()
            ),
            (json!("d"), json!("v"), json!("1970-01-01T00:00:01.000Z"))
        );
        assert_eq!(v["userId"], json!("a"));
        assert_eq!(
            render_user(
                "a",
                &View {
                    select: Select::Rank(nz(4)),
                    fields: None
                },
                &served(),
                &stored
            )
            .unwrap_err()
            .code,
            "rank_out_of_range"
        );
    }

    #[test]
    fn batch_answers_keep_the_order_and_say_what_each_user_is() {
        let a = Stored::decode(br#"{"u":1,"i":[10,20]}"#).unwrap();
        let users = [
            BatchId {
                id: "1".into(),
                given: json!("1"),
            },
            BatchId {
                id: "9".into(),
                given: json!(9),
            },
            BatchId {
                id: "1".into(),
                given: json!(1),
            },
        ];
        let records = [Some(a.clone()), None, Some(a)];
        let v: Value = serde_json::from_str(
            &render_batch(
                &users,
                &records,
                &View {
                    select: Select::Rank(nz(2)),
                    fields: None,
                },
                &served(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                v["count"].clone(),
                v["found"].clone(),
                v["version"].clone(),
                v["dataset"].clone()
            ),
            (json!(3), json!(2), json!("v"), json!("d"))
        );
        let r = &v["results"];
        assert_eq!(
            (
                r[0]["userId"].clone(),
                r[0]["status"].clone(),
                r[0]["item"].clone()
            ),
            (json!(1), json!("found"), json!(20))
        );
        assert_eq!(
            (r[1]["userId"].clone(), r[1]["status"].clone()),
            (json!(9), json!("unknown_user"))
        );
        assert_eq!(r[2]["item"], json!(20));
        let v: Value = serde_json::from_str(
            &render_batch(
                &users[..1],
                &records[..1],
                &View {
                    select: Select::Rank(nz(3)),
                    fields: None,
                },
                &served(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            (
                v["results"][0]["status"].clone(),
                v["results"][0].get("item")
            ),
            (json!("rank_out_of_range"), None)
        );
    }

    #[test]
    fn answers_are_the_json_a_value_tree_would_give() {
        // The direct writer against the shape it replaced, built as values.
        let stored = Stored::decode(br#"{"u":7,"i":[5,"s\u00e9",-3],"x":{"why":["a","b","c"],"n":{"deep":[1,{"x":null}]}}}"#).unwrap();
        let body = render_user(
            "7",
            &View {
                select: Select::Limit(nz(2)),
                fields: None,
            },
            &served(),
            &stored,
        )
        .unwrap();
        let expected = json!({
            "dataset": "d", "userId": 7, "version": "v",
            "freshness": {"producedAt": "1970-01-01T00:00:01.000Z", "liveSince": "1970-01-01T00:00:02.000Z", "ageSeconds": 60, "maxAgeSeconds": null, "stale": false},
            "items": [5, "sé"], "count": 2, "fields": {"why": ["a", "b"], "n": {"deep": [1, {"x": null}]}}
        });
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), expected);
        assert_eq!(body, expected.to_string(), "keys in the documented order");
    }

    #[test]
    fn freshness_is_stale_only_past_the_maximum_age() {
        let mut f = Freshness {
            produced_ms: Some(1_000),
            live_ms: None,
            max_age: Some(Duration::from_secs(60)),
            now_ms: 61_000,
        };
        assert!(!f.is_stale());
        f.now_ms = 61_001;
        assert!(f.is_stale());
        assert_eq!(serde_json::to_value(&f).unwrap()["stale"], json!(true));
        f.max_age = None;
        assert!(!f.is_stale());
        assert_eq!(
            serde_json::to_value(&f).unwrap()["maxAgeSeconds"],
            Value::Null
        );
    }
}
