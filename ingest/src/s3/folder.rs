//! Which uploads are batches: a single object, or a folder of many files
//! committed by a marker.
//!
//! - An object directly in a dataset folder (`recommendations/2026-12-02.jsonl`),
//!   or without a folder, is a batch of its own.
//! - An object in a folder inside a dataset folder
//!   (`recommendations/2026-12-02/part-00000.parquet`) is part of a **folder
//!   batch**, which becomes one version when its commit marker lands:
//!   `_SUCCESS` (empty: the folder's files; or the JSON Hadoop's S3A
//!   committers write, whose `filenames` list them) or `_manifest.json`
//!   ([`Manifest`]: files with sizes and ETags, optional row count and format).
//! - An object in a dataset's `_delta/` folder
//!   (`recommendations/_delta/fixes-0930.jsonl`) is a **delta**: users
//!   corrected on the live version without a new one ([`shared::db::deltas`]).
//! - Otherwise a name starting with `_` or `.` (at any depth below the
//!   folder) is never data: `_temporary/`, `.crc` files, `_SUCCESS` itself.
//!
//! Pure functions over keys and marker bodies; the planner does the I/O.

use serde::Deserialize;

use super::event::dataset_of;

/// The folder of a dataset that holds its deltas.
pub const DELTA_FOLDER: &str = "_delta";

/// The commit marker file names.
pub const SUCCESS: &str = "_SUCCESS";
pub const MANIFEST: &str = "_manifest.json";

/// The largest marker body read (a manifest of many thousand files fits).
pub const MAX_MARKER_BYTES: u64 = 8 << 20;

/// What an uploaded key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload<'a> {
    /// A batch of one object.
    Object { dataset: &'a str },
    /// A data file of a folder batch: it waits for its folder's marker.
    Part { dataset: &'a str, folder: &'a str },
    /// A folder's commit marker: the batch is the folder's files.
    Marker {
        dataset: &'a str,
        folder: &'a str,
        kind: Marker,
    },
    /// A delta: users to upsert or delete on the live version.
    Delta { dataset: &'a str },
    /// Not data, and not a marker.
    Ignored,
}

/// Which marker committed a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    Success,
    Manifest,
}

/// What the object `key` is, in a bucket whose keys without a folder belong
/// to `default_dataset`. A folder is spelled with its trailing `/`.
pub fn classify<'a>(key: &'a str, default_dataset: &'a str) -> Upload<'a> {
    let dataset = dataset_of(key, default_dataset);
    let (folder, name) = match key.rsplit_once('/') {
        Some((parent, name)) => (&key[..parent.len() + 1], name),
        None => ("", key),
    };
    // Directly in a dataset folder (or in none): one parent segment at most.
    let nested = folder.matches('/').count() >= 2;
    if folder.split('/').nth(1) == Some(DELTA_FOLDER)
        && folder.matches('/').count() == 2
        && !folder.starts_with('/')
    {
        return if is_hidden(name) || name.is_empty() {
            Upload::Ignored
        } else {
            Upload::Delta { dataset }
        };
    }
    if let Some(kind) = match name {
        SUCCESS => Some(Marker::Success),
        MANIFEST => Some(Marker::Manifest),
        _ => None,
    } {
        return if nested {
            Upload::Marker {
                dataset,
                folder,
                kind,
            }
        } else {
            Upload::Ignored
        };
    }
    if is_hidden(name) || name.is_empty() {
        return Upload::Ignored;
    }
    if !nested {
        return Upload::Object { dataset };
    }
    // A data file below a hidden folder (`_temporary/…`) is not data either.
    let below_dataset = key.split_once('/').map_or("", |(_, rest)| rest);
    if below_dataset.split('/').any(is_hidden) {
        return Upload::Ignored;
    }
    let top = key.split_once('/').map_or(0, |(d, _)| d.len() + 1);
    let first_folder_end = key[top..].find('/').map_or(key.len(), |i| top + i + 1);
    Upload::Part {
        dataset,
        folder: &key[..first_folder_end],
    }
}

/// Whether a path segment is never data.
fn is_hidden(segment: &str) -> bool {
    segment.starts_with('_') || segment.starts_with('.')
}

/// Whether `key`, listed under `folder`, is a data file of the folder's batch.
pub fn is_data(folder: &str, key: &str) -> bool {
    match key.strip_prefix(folder) {
        Some(rest) => !rest.is_empty() && !rest.ends_with('/') && !rest.split('/').any(is_hidden),
        None => false,
    }
}

/// A `_manifest.json`: the files of a batch, checked before it is planned.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub files: Vec<ManifestFile>,
    /// Rows the files hold in all: the version fails if its users differ.
    #[serde(default)]
    pub rows: Option<u64>,
    /// The files' format (`parquet`, `csv`, `json-lines`, …): a file whose
    /// content says otherwise fails the version.
    #[serde(default)]
    pub format: Option<String>,
}

/// One file of a manifest: a key relative to the folder (or the full key).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    #[serde(alias = "path")]
    pub key: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub etag: Option<String>,
}

impl Manifest {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let m: Manifest =
            serde_json::from_slice(body).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if m.files.is_empty() {
            return Err("the manifest lists no files".into());
        }
        Ok(m)
    }
}

/// The full key of a file a marker in `folder` names: relative to the
/// folder, or already a key below it, or an S3A path (`/bucket-relative`
/// or `s3a://bucket/key`).
pub fn key_in(folder: &str, named: &str) -> String {
    let named = named
        .strip_prefix("s3a://")
        .or_else(|| named.strip_prefix("s3://"))
        .map_or(named, |rest| rest.split_once('/').map_or(rest, |(_, k)| k));
    let named = named.trim_start_matches('/');
    if named.starts_with(folder) {
        named.to_string()
    } else {
        format!("{folder}{named}")
    }
}

/// The files a `_SUCCESS` body lists (the S3A committers' JSON), or `None`
/// for an empty or plain-text marker, whose folder is listed instead.
pub fn success_files(folder: &str, body: &[u8]) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct SuccessData {
        #[serde(default)]
        filenames: Vec<String>,
    }
    let data: SuccessData = serde_json::from_slice(body).ok()?;
    if data.filenames.is_empty() {
        return None;
    }
    Some(
        data.filenames
            .iter()
            .map(|f| key_in(folder, f))
            .filter(|k| is_data(folder, k))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_parts_and_markers_are_told_apart_by_key() {
        let d = "default";
        assert_eq!(
            classify("recs/2026-12-02.jsonl", d),
            Upload::Object { dataset: "recs" }
        );
        assert_eq!(
            classify("batch.jsonl", d),
            Upload::Object { dataset: "default" }
        );
        assert_eq!(
            classify("recs/2026-12-02/part-00000.parquet", d),
            Upload::Part {
                dataset: "recs",
                folder: "recs/2026-12-02/"
            }
        );
        // A partitioned folder's files belong to its top folder, where the marker is.
        assert_eq!(
            classify("recs/run/country=US/part-0.parquet", d),
            Upload::Part {
                dataset: "recs",
                folder: "recs/run/"
            }
        );
        assert_eq!(
            classify("recs/2026-12-02/_SUCCESS", d),
            Upload::Marker {
                dataset: "recs",
                folder: "recs/2026-12-02/",
                kind: Marker::Success
            }
        );
        assert_eq!(
            classify("recs/2026-12-02/_manifest.json", d),
            Upload::Marker {
                dataset: "recs",
                folder: "recs/2026-12-02/",
                kind: Marker::Manifest
            }
        );
        assert_eq!(
            classify("recs/_delta/fix-1.jsonl", d),
            Upload::Delta { dataset: "recs" }
        );
        for ignored in [
            "recs/_SUCCESS",
            "_SUCCESS",
            "recs/.hidden.jsonl",
            "recs/run/_temporary/0/part-0",
            "recs/run/.part-0.crc",
            "recs/run/",
            "recs/_delta/",
            "recs/_delta/.tmp",
            "recs/_delta/sub/x.jsonl",
        ] {
            assert_eq!(classify(ignored, d), Upload::Ignored, "{ignored}");
        }
    }

    #[test]
    fn listed_keys_are_data_unless_hidden_at_any_depth() {
        assert!(is_data("r/f/", "r/f/part-0.parquet"));
        assert!(is_data("r/f/", "r/f/x=1/part-0.parquet"));
        assert!(!is_data("r/f/", "r/f/_SUCCESS"));
        assert!(!is_data("r/f/", "r/f/_temporary/part-0"));
        assert!(!is_data("r/f/", "r/f/.part-0.crc"));
        assert!(!is_data("r/f/", "r/g/part-0"));
        assert!(!is_data("r/f/", "r/f/sub/"));
    }

    #[test]
    fn markers_name_files_relative_to_their_folder_or_as_s3a_paths() {
        assert_eq!(key_in("r/f/", "part-0.parquet"), "r/f/part-0.parquet");
        assert_eq!(key_in("r/f/", "r/f/part-0.parquet"), "r/f/part-0.parquet");
        assert_eq!(key_in("r/f/", "/r/f/part-0.parquet"), "r/f/part-0.parquet");
        assert_eq!(
            key_in("r/f/", "s3a://bucket/r/f/part-0.parquet"),
            "r/f/part-0.parquet"
        );
        let s3a = br#"{"name":"org.apache.hadoop.fs.s3a.commit.files.SuccessData/1","timestamp":1,"filenames":["/r/f/part-00000.parquet","/r/f/part-00001.parquet"]}"#;
        assert_eq!(
            success_files("r/f/", s3a),
            Some(vec![
                "r/f/part-00000.parquet".to_string(),
                "r/f/part-00001.parquet".to_string()
            ])
        );
        assert_eq!(success_files("r/f/", b""), None);
        assert_eq!(success_files("r/f/", b"{}"), None);
    }

    #[test]
    fn a_manifest_lists_files_and_refuses_unknown_fields() {
        let m = Manifest::parse(br#"{"files": [{"key": "a.parquet", "size": 10, "etag": "\"e\""}, {"path": "b.parquet"}], "rows": 5, "format": "parquet"}"#).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files[1].key, "b.parquet");
        assert_eq!((m.rows, m.format.as_deref()), (Some(5), Some("parquet")));
        assert!(Manifest::parse(br#"{"files": []}"#)
            .unwrap_err()
            .contains("no files"));
        assert!(Manifest::parse(br#"{"files": [{"key": "a", "sise": 1}]}"#).is_err());
    }
}
