//! The shape of a connection: listing folders, creating and deleting them,
//! copying and moving files.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_common::body::Body;
use ferry_common::path::{ObjectPath, STAGING_DIR};
use ferry_common::problem::{ErrorCode, Problem};
use futures_util::{StreamExt as _, TryStreamExt as _};
use http::{Request, StatusCode};
use opendal::ErrorKind;
use serde::Deserialize;
use serde_json::json;

use super::connections::{Resolved, resolve};
use super::http_util::{json, paging, read_json};
use ferry_common::content::files::file_json;
use ferry_common::content::model::{Commit, EventRecord, Intent, Origin};
use ferry_common::content::transfer::{
    StageError, checksums_of, current, etag_for, read_stream, replaced, served_etag, stage,
    still_describes,
};
use ferry_common::content::{Claimed, MetaHost as _};

use super::{ApiResult, AppState, store_problem};
use super::{HubHost, VIA_HUB};
use crate::store::{EventKind, ObjectMeta, key_of, now_ms};
use ferry_common::provider::problem as provider_problem;

fn invalid_path(e: ferry_common::path::PathError) -> Problem {
    Problem::new(ErrorCode::InvalidPath, e.to_string())
}

fn folder_json(path: &str) -> serde_json::Value {
    json!({ "path": path, "name": path.rsplit('/').next().unwrap_or(path), "type": "folder" })
}

/// An event of ferry's own about `path` in the resolved connection.
fn event_at(res: &Resolved, kind: EventKind, path: &str, size: Option<i64>) -> EventRecord {
    EventRecord {
        account_id: res.account.clone(),
        connection_id: res.row.id.clone(),
        kind,
        path: path.to_owned(),
        from_path: None,
        size,
        at: now_ms(),
        origin: Origin::Ferry,
    }
}

/// Checks that `dir` is a folder; `Ok(false)` when nothing is there.
async fn is_folder(res: &Resolved, dir: &ObjectPath) -> Result<bool, Problem> {
    match res.op.stat(dir.as_str()).await {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(_) => Err(Problem::new(
            ErrorCode::NotAFolder,
            format!("'{dir}' is a file"),
        )),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            // Object stores have no folder objects: a prefix with entries is one.
            match res.op.stat(&dir.as_dir()).await {
                Ok(m) if m.is_dir() => Ok(true),
                Ok(_) => Ok(false),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(provider_problem(&e, &res.row.provider, "stat")),
            }
        }
        Err(e) => Err(provider_problem(&e, &res.row.provider, "stat")),
    }
}

/// What a listing answers with: where its entries came from.
const INDEX_HEADER: &str = "x-ferry-index";

pub async fn list(
    state: &Arc<AppState>,
    conn: &str,
    raw_dir: &str,
    req: Request<Body>,
) -> ApiResult {
    let res = resolve(state, req.headers(), conn).await?;
    let page = paging(&req, 100, 1000)?;
    let dir = ObjectPath::parse_dir(raw_dir).map_err(invalid_path)?;
    // A cursor is the key name of the last entry sent (a folder's with a
    // `/` after it); any bytes, as names are compared as bytes, so a
    // cursor that is not a name still says where to resume.
    let after = match &page.cursor {
        None => Vec::new(),
        Some(c) => URL_SAFE_NO_PAD.decode(c).ok().ok_or_else(|| {
            Problem::new(
                ErrorCode::InvalidCursor,
                "use a 'next_cursor' from an earlier answer",
            )
        })?,
    };
    let complete = state.index_complete(&res.row.id).await?;
    let (entries, next) = if complete {
        list_from_index(state, &res, dir.as_ref(), &after, page.limit).await?
    } else {
        state.metrics.index.listings_from_provider.inc();
        list_from_provider(state, &res, dir.as_ref(), &after, page.limit).await?
    };
    let index = if complete { "complete" } else { "building" };
    let mut resp = json(
        StatusCode::OK,
        &json!({
            "entries": entries,
            "next_cursor": next.map(|k| URL_SAFE_NO_PAD.encode(k)),
            "index": index,
        }),
    );
    resp.headers_mut()
        .insert(INDEX_HEADER, http::HeaderValue::from_static(index));
    Ok(resp)
}

type Page = (Vec<serde_json::Value>, Option<Vec<u8>>);

/// Cuts `items` (sorted, one more than a page asked for when more follow)
/// to `limit`, and returns the cursor after the last kept when more
/// follow.
fn page_end<T>(items: &mut Vec<T>, limit: usize, key: impl Fn(&T) -> &String) -> Option<Vec<u8>> {
    let more = items.len() > limit;
    items.truncate(limit);
    more.then(|| {
        items
            .last()
            .map(|i| key(i).clone().into_bytes())
            .unwrap_or_default()
    })
}

/// A page of a folder from the metadata index: one range query.
async fn list_from_index(
    state: &Arc<AppState>,
    res: &Resolved,
    dir: Option<&ObjectPath>,
    after: &[u8],
    limit: usize,
) -> Result<Page, Problem> {
    let conn = res.row.id.as_str();
    let parent = match dir {
        None => String::new(),
        Some(d) => {
            let (up, name) = key_of(d.as_str(), false);
            format!("{up}{name}/")
        }
    };
    // Names are UTF-8 in the index; a cursor that is not (none of
    // ferry's) is asked from its longest UTF-8 prefix, then filtered.
    let valid = match std::str::from_utf8(after) {
        Ok(_) => after.len(),
        Err(e) => e.valid_up_to(),
    };
    let after_text = String::from_utf8_lossy(&after[..valid]).into_owned();
    let mut rows = state
        .store
        .index_page(conn, &parent, &after_text, limit as i64 + 1)
        .await
        .map_err(|e| store_problem(state, e))?;
    // A folder with entries is there (the index holds every folder of its
    // entries); an empty page is asked whether the folder is.
    if rows.is_empty()
        && let Some(d) = dir
    {
        folder_is_indexed(state, conn, d).await?;
    }
    rows.retain(|l| l.entry.name.as_bytes() > after);
    let next = page_end(&mut rows, limit, |l| &l.entry.name);
    let entries = rows
        .into_iter()
        .map(|l| {
            let path = format!("{parent}{}", l.entry.display_name());
            if l.entry.is_dir() {
                return folder_json(&path);
            }
            let size = l.entry.size.unwrap_or(0).max(0) as u64;
            let modified_ms = l.entry.modified_ns.map(|ns| ns.div_euclid(1_000_000));
            let meta = l.meta.filter(|m| still_describes(m, size, modified_ms));
            let etag = served_etag(
                meta.as_ref(),
                l.entry.etag.as_deref(),
                l.entry.modified_ns,
                size,
            );
            file_json(&path, size, &etag, meta.as_ref(), modified_ms)
        })
        .collect();
    Ok((entries, next))
}

/// Succeeds when the index holds a folder at `d`: `not_a_folder` for a
/// file there, `not_found` for nothing.
async fn folder_is_indexed(state: &AppState, conn: &str, d: &ObjectPath) -> Result<(), Problem> {
    let (up, name) = key_of(d.as_str(), false);
    let found = state
        .store
        .index_entry(conn, &up, &format!("{name}/"))
        .await
        .map_err(|e| store_problem(state, e))?;
    if found.is_some() {
        return Ok(());
    }
    let file = state
        .store
        .index_entry(conn, &up, &name)
        .await
        .map_err(|e| store_problem(state, e))?;
    Err(match file {
        Some(_) => Problem::new(ErrorCode::NotAFolder, format!("'{d}' is a file")),
        None => Problem::new(ErrorCode::NotFound, format!("no folder at '{d}'")),
    })
}

/// A page of a folder asked of the provider, while the connection's index
/// is being built: the whole folder is listed as a stream, the page's
/// smallest key names kept, and each file of the page looked up.
async fn list_from_provider(
    state: &Arc<AppState>,
    res: &Resolved,
    dir: Option<&ObjectPath>,
    after: &[u8],
    limit: usize,
) -> Result<Page, Problem> {
    let host = HubHost::new(state.clone(), VIA_HUB);
    let list_path = match dir {
        Some(d) => {
            if !is_folder(res, d).await? {
                return Err(Problem::new(
                    ErrorCode::NotFound,
                    format!("no folder at '{d}'"),
                ));
            }
            d.as_dir()
        }
        None => "/".to_owned(),
    };
    // Providers list in their own order: the listing is read as a stream
    // and only the page's keys are kept — the `limit + 1` smallest key
    // names after the cursor (a folder's with a `/` after it), so a cursor
    // resumes exactly where the previous page ended, in the index's order,
    // and a folder of any size costs one page of memory.
    let mut lister = res
        .op
        .lister(&list_path)
        .await
        .map_err(|e| provider_problem(&e, &res.row.provider, "list"))?;
    let mut smallest = std::collections::BTreeMap::<String, bool>::new();
    while let Some(e) = lister.next().await {
        let e = e.map_err(|e| provider_problem(&e, &res.row.provider, "list"))?;
        if e.path() == list_path
            || e.path().trim_end_matches('/') == list_path.trim_end_matches('/')
        {
            continue;
        }
        let is_dir = e.metadata().is_dir();
        let name = e.name().trim_end_matches('/');
        if name.is_empty() || (dir.is_none() && name == STAGING_DIR) {
            continue;
        }
        let key = if is_dir {
            format!("{name}/")
        } else {
            name.to_owned()
        };
        if key.as_bytes() <= after {
            continue;
        }
        smallest.insert(key, is_dir);
        if smallest.len() > limit + 1 {
            smallest.pop_last();
        }
    }
    let mut names: Vec<(String, bool)> = smallest.into_iter().collect();
    let next = page_end(&mut names, limit, |n| &n.0);

    let prefix = dir.map(|d| format!("{}/", d.as_str())).unwrap_or_default();
    type Lookup<'a> =
        futures_util::future::BoxFuture<'a, Result<Option<serde_json::Value>, Problem>>;
    let lookups: Vec<Lookup<'_>> = names
        .into_iter()
        .map(|(key, is_dir)| {
            let path = format!("{prefix}{}", key.trim_end_matches('/'));
            let host = &host;
            let lookup: Lookup<'_> = Box::pin(async move {
                if is_dir {
                    return Ok(Some(folder_json(&path)));
                }
                // An entry deleted since the listing is skipped, not an error.
                match current(host, &res.op, &res.row.id, &path).await {
                    Ok(Some(v)) => Ok(Some(file_json(
                        &path,
                        v.size,
                        &v.etag,
                        v.meta.as_ref(),
                        v.modified_ms(),
                    ))),
                    Ok(None) => Ok(None),
                    Err(p) if p.error_code() == ErrorCode::NotAFile => Ok(Some(folder_json(&path))),
                    Err(p) => Err(p),
                }
            });
            lookup
        })
        .collect();
    let entries: Vec<serde_json::Value> = futures_util::stream::iter(lookups)
        .buffered(8)
        .try_filter_map(|v| async move { Ok(v) })
        .try_collect()
        .await?;
    Ok((entries, next))
}

pub async fn create_folder(
    state: &Arc<AppState>,
    conn: &str,
    raw: &str,
    req: Request<Body>,
) -> ApiResult {
    let res = resolve(state, req.headers(), conn).await?;
    let path = ObjectPath::parse_dir(raw)
        .map_err(invalid_path)?
        .ok_or_else(|| Problem::new(ErrorCode::InvalidPath, "the root folder always exists"))?;
    if is_folder(&res, &path).await? {
        return Ok(json(StatusCode::OK, &folder_json(path.as_str())));
    }
    super::writable(state).await?;
    res.op
        .create_dir(&path.as_dir())
        .await
        .map_err(|e| provider_problem(&e, &res.row.provider, "create folder"))?;
    // A folder the index already has was made before (some object stores
    // do not answer for an empty folder's marker): made again at the
    // provider, it is not news.
    let (up, name) = key_of(path.as_str(), true);
    let indexed = state
        .store
        .index_entry(&res.row.id, &up, &name)
        .await
        .map_err(|e| store_problem(state, e))?;
    if indexed.is_some() {
        return Ok(json(StatusCode::OK, &folder_json(path.as_str())));
    }
    let event = event_at(&res, EventKind::Created, path.as_str(), None);
    state
        .store
        .commit(&Commit {
            event: Some(event),
            folder: Some((res.row.id.clone(), path.as_str().to_owned())),
            ..Commit::default()
        })
        .await
        .map_err(|e| store_problem(state, e))?;
    Ok(json(StatusCode::CREATED, &folder_json(path.as_str())))
}

/// How many files a recursive folder deletion removes at the provider
/// before it records them, in one transaction (and their intents in one
/// before that).
const DELETE_BATCH: usize = 256;

/// `recursive` from a folder deletion's query (`true` or `false`, default
/// `false`); any other parameter is an error.
fn recursive_flag(query: Option<&str>) -> Result<bool, Problem> {
    let bad = |what: String| Problem::new(ErrorCode::InvalidQuery, what);
    let pairs = super::routes::query_pairs(query)
        .map_err(|_| bad("the query is not valid percent-encoded UTF-8".to_owned()))?;
    let mut recursive = false;
    for (k, v) in pairs {
        recursive = match (k.as_str(), v.as_str()) {
            ("recursive", "true") => true,
            ("recursive", "false") => false,
            ("recursive", _) => {
                return Err(bad("'recursive' must be 'true' or 'false'".to_owned()));
            }
            _ => return Err(bad(format!("unknown query parameter '{k}'"))),
        };
    }
    Ok(recursive)
}

/// `DELETE /v1/connections/{conn}/folders/{path}`: an empty folder, or
/// with `recursive=true` everything in it. Files go in batches: each
/// file's intent is recorded, the files are deleted at the provider, and
/// those deleted are recorded (rows removed, a `deleted` event per file)
/// in one transaction. A deletion cut short leaves every file that is
/// still there with its record, and the intents of those it deleted
/// settle as any file deletion's do. The folder's own `deleted` event
/// comes last. A change under way to a file in it (an upload) is a
/// conflict: the files deleted before it stay deleted.
pub async fn delete_folder(
    state: &Arc<AppState>,
    conn: &str,
    raw: &str,
    req: Request<Body>,
) -> ApiResult {
    let res = resolve(state, req.headers(), conn).await?;
    let recursive = recursive_flag(req.uri().query())?;
    let started = now_ms();
    let path = ObjectPath::parse_dir(raw)
        .map_err(invalid_path)?
        .ok_or_else(|| Problem::new(ErrorCode::InvalidPath, "the root folder cannot be deleted"))?;
    // Some object stores do not answer for an empty folder's marker: one
    // the index knows is there too.
    let (up, name) = key_of(path.as_str(), true);
    if !is_folder(&res, &path).await?
        && state
            .store
            .index_entry(&res.row.id, &up, &name)
            .await
            .map_err(|e| store_problem(state, e))?
            .is_none()
    {
        return Err(Problem::new(
            ErrorCode::NotFound,
            format!("no folder at '{path}'"),
        ));
    }
    let dir = path.as_dir();
    let failed = |e: opendal::Error| provider_problem(&e, &res.row.provider, "delete folder");
    super::writable(state).await?;
    let mut files = 0u64;
    let mut lister = res
        .op
        .lister_with(&dir)
        .recursive(recursive)
        .await
        .map_err(failed)?;
    let mut batch: Vec<(String, u64)> = Vec::new();
    let mut folders = vec![dir.clone()];
    loop {
        let next = lister.next().await.transpose().map_err(failed)?;
        if let Some(e) = &next {
            let inside = e.path().trim_end_matches('/') != dir.trim_end_matches('/');
            if inside && !recursive {
                return Err(Problem::new(
                    ErrorCode::FolderNotEmpty,
                    format!("'{path}' is not empty; add '?recursive=true' to delete all it holds"),
                ));
            }
            match e.metadata().is_file() {
                true if inside => batch.push((e.path().to_owned(), e.metadata().content_length())),
                false if inside => folders.push(e.path().to_owned()),
                _ => {}
            }
        }
        if batch.len() >= DELETE_BATCH || (next.is_none() && !batch.is_empty()) {
            files += delete_files(state, &res, std::mem::take(&mut batch)).await?;
        }
        if next.is_none() {
            break;
        }
    }
    // The folders, each after those inside it (a folder's name sorts
    // before its children's): empty now, or markers on object stores.
    folders.sort_unstable_by(|a, b| b.cmp(a));
    for folder in &folders {
        res.op.delete(folder).await.map_err(failed)?;
    }
    let event = event_at(&res, EventKind::Deleted, path.as_str(), None);
    state
        .store
        .remove_folder(&dir, started, &event)
        .await
        .map_err(|e| store_problem(state, e))?;
    tracing::info!(connection.id = %res.row.id, path = %path, files, "deleted a folder");
    Ok(json(
        StatusCode::OK,
        &json!({ "path": path.as_str(), "type": "folder", "deleted_files": files }),
    ))
}

/// Deletes `files` (path, size) at the provider, then records those
/// deleted; how many.
async fn delete_files(
    state: &Arc<AppState>,
    res: &Resolved,
    files: Vec<(String, u64)>,
) -> Result<u64, Problem> {
    // Each change is an intent first, as a file's deletion is: a scan of
    // the provider that sees a file gone before its deletion is recorded
    // leaves it to this record (`Store::apply_scan`).
    let mut changes: Vec<Commit> = files
        .iter()
        .map(|(p, size)| Commit {
            remove: vec![(res.row.id.clone(), p.clone())],
            event: Some(event_at(res, EventKind::Deleted, p, Some(*size as i64))),
            ..Commit::default()
        })
        .collect();
    let intents: Vec<Intent> = changes
        .iter()
        .zip(&files)
        .map(|(change, (p, _))| Intent {
            connection_id: res.row.id.clone(),
            path: p.clone(),
            expect: None,
            also_absent: None,
            replaces: 0,
            source: None,
            conditional: false,
            change: change.clone(),
        })
        .collect();
    let ids = match state.store.record_intents(&intents, None).await {
        Ok(ids) => ids,
        Err(crate::store::StoreError::WriteConflict(_)) => {
            return Err(Problem::new(
                ErrorCode::WriteConflict,
                "a change to a file in the folder is under way; the files deleted before it stay deleted; retry once it is done",
            ));
        }
        Err(e) => return Err(store_problem(state, e)),
    };
    for (change, id) in changes.iter_mut().zip(ids) {
        change.intent = Some(id);
    }
    // One by one, some at once: not every provider (nor every emulator of
    // one) takes batch deletes. What was deleted is recorded even when
    // another delete failed, and then the failure is answered; the intent
    // of a file not deleted is given up.
    let deletes: Vec<_> = changes
        .into_iter()
        .zip(files)
        .map(|(change, (p, _))| {
            let op = res.op.clone();
            async move { (op.delete(&p).await, change) }
        })
        .collect();
    let done: Vec<_> = futures_util::stream::iter(deletes)
        .buffer_unordered(16)
        .collect()
        .await;
    let mut failed = None;
    let mut changes = Vec::with_capacity(done.len());
    for (result, change) in done {
        match result {
            Ok(()) => changes.push(change),
            Err(e) => {
                failed = Some(e);
                if let Some(id) = change.intent {
                    tokio::spawn(super::intents::abandoned(state.clone(), id));
                }
            }
        }
    }
    state
        .store
        .commit_all(&changes)
        .await
        .map_err(|e| store_problem(state, e))?;
    match failed {
        None => Ok(changes.len() as u64),
        Some(e) => Err(provider_problem(&e, &res.row.provider, "delete folder")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Relocate {
    from: String,
    to: String,
    #[serde(default)]
    overwrite: bool,
}

pub async fn copy_or_move(
    state: &Arc<AppState>,
    conn: &str,
    is_move: bool,
    req: Request<Body>,
) -> ApiResult {
    let res = resolve(state, req.headers(), conn).await?;
    if !is_move {
        // A copy stores more: refused once the storage quota is reached.
        crate::limits::check(state, &res.account, crate::limits::Use::Write(None)).await?;
    }
    let conditions = Conditions::of(req.headers());
    let body: Relocate = read_json(req, state.max_json_body_bytes()).await?;
    let (from, to) = (&body.from, &body.to);
    relocate(state, &res, from, to, body.overwrite, is_move, &conditions).await
}

/// A copy's or move's conditions: `If-Match` on the source (the version
/// the client saw), `If-None-Match` on the destination (`*`: nothing may
/// be there).
#[derive(Debug, Default)]
pub(super) struct Conditions {
    source: http::HeaderMap,
    target: http::HeaderMap,
}

impl Conditions {
    /// Whether the request had any.
    fn is_empty(&self) -> bool {
        self.source.is_empty() && self.target.is_empty()
    }

    fn of(headers: &http::HeaderMap) -> Self {
        let pick = |name: http::header::HeaderName| {
            let mut only = http::HeaderMap::new();
            for v in headers.get_all(&name) {
                only.append(name.clone(), v.clone());
            }
            only
        };
        Self {
            source: pick(http::header::IF_MATCH),
            target: pick(http::header::IF_NONE_MATCH),
        }
    }

    fn check(&self, source: &str, target: Option<&str>) -> Result<(), Problem> {
        use ferry_common::content::conditional::{Verdict, evaluate};
        let post = http::Method::POST;
        if evaluate(&self.source, &post, Some(source)) != Verdict::Proceed {
            return Err(Problem::new(
                ErrorCode::PreconditionFailed,
                "the source's current entity tag does not match If-Match",
            ));
        }
        if evaluate(&self.target, &post, target) != Verdict::Proceed {
            return Err(Problem::new(
                ErrorCode::PreconditionFailed,
                "something at the destination matches If-None-Match",
            ));
        }
        Ok(())
    }
}

/// Copies (or moves) the file `from` to `to` in the resolved connection,
/// replacing a file at `to` only with `overwrite`, if `conditions` hold.
pub(super) async fn relocate(
    state: &Arc<AppState>,
    res: &super::connections::Resolved,
    from: &str,
    to: &str,
    overwrite: bool,
    is_move: bool,
    conditions: &Conditions,
) -> ApiResult {
    let host = HubHost::new(state.clone(), VIA_HUB);
    let from = ObjectPath::parse(from).map_err(invalid_path)?;
    let to = ObjectPath::parse(to).map_err(invalid_path)?;
    let conn_id = res.row.id.as_str();
    // Lock both paths in a fixed order so two opposite moves cannot deadlock.
    let (first, second) = if from < to {
        (&from, &to)
    } else {
        (&to, &from)
    };
    let _g1 = state.locks.lock(conn_id, first.as_str()).await;
    // One path named twice is locked once: the lock is not re-entrant.
    let _g2 = match from != to {
        true => Some(state.locks.lock(conn_id, second.as_str()).await),
        false => None,
    };

    let src = current(&host, &res.op, conn_id, from.as_str()).await?;
    let src =
        src.ok_or_else(|| Problem::new(ErrorCode::NotFound, format!("no file at '{from}'")))?;
    if from == to {
        // The file at `to` is the source itself: a conflict with what is
        // there, not a malformed request (no schema can compare the two).
        return Err(Problem::new(
            ErrorCode::AlreadyExists,
            format!("'{to}' is the file being copied or moved: it cannot replace itself"),
        ));
    }
    let dst = match current(&host, &res.op, conn_id, to.as_str()).await {
        Ok(v) => v,
        Err(p) if p.error_code() == ErrorCode::NotAFile => {
            return Err(Problem::new(
                ErrorCode::AlreadyExists,
                format!("a folder exists at '{to}'"),
            ));
        }
        Err(p) => return Err(p),
    };
    // Object stores have no folders, only names with a `/`: look for
    // anything under `to/` too, so that a file never shadows a folder.
    if dst.is_none()
        && res
            .op
            .exists(&format!("{to}/"))
            .await
            .map_err(|e| provider_problem(&e, &res.row.provider, "stat"))?
    {
        return Err(Problem::new(
            ErrorCode::AlreadyExists,
            format!("a folder exists at '{to}'"),
        ));
    }
    conditions.check(&src.etag, dst.as_ref().map(|d| d.etag.as_str()))?;
    if dst.is_some() && !overwrite {
        return Err(Problem::new(
            ErrorCode::AlreadyExists,
            format!("a file exists at '{to}'; send \"overwrite\": true to replace it"),
        ));
    }

    let what = if is_move { "move" } else { "copy" };
    let kind = if is_move {
        EventKind::Moved
    } else {
        EventKind::Copied
    };
    let event = |at: i64| EventRecord {
        from_path: Some(from.as_str().to_owned()),
        at,
        ..event_at(res, kind, to.as_str(), Some(src.size as i64))
    };
    let mut remove = vec![(conn_id.to_owned(), to.as_str().to_owned())];
    if is_move {
        remove.push((conn_id.to_owned(), from.as_str().to_owned()));
    }
    let placed = |m: ObjectMeta, modified_ms: Option<i64>, at: i64| ObjectMeta {
        connection_id: conn_id.to_owned(),
        path: to.as_str().to_owned(),
        etag: etag_for(m.crc64nvme, m.size as u64),
        provider_modified_ms: modified_ms,
        updated_at: at,
        ..m
    };
    // A source ferry has no record of (written outside ferry, or its
    // upload's report still on its way from a spoke) is checksummed first,
    // so that the copy has a record of its own and its change an intent.
    let source = match &src.meta {
        Some(m) => m.clone(),
        None => checksummed(res, from.as_str()).await?,
    };
    // The change is recorded as an intent first (see `intents`), naming
    // the version of `to` it replaces and the version of `from` it read:
    // settled later by what the provider holds at `to` (and, for a move,
    // that nothing is left at `from`) if this commit never comes.
    let at = now_ms();
    let intent = Intent {
        connection_id: conn_id.to_owned(),
        path: to.as_str().to_owned(),
        expect: Some((src.size, source.crc64nvme)),
        also_absent: is_move.then(|| from.as_str().to_owned()),
        replaces: replaced(&host, conn_id, to.as_str(), dst.as_ref()).await?,
        source: Some((from.as_str().to_owned(), src.generation)),
        conditional: !conditions.is_empty(),
        change: Commit {
            upsert: Some(placed(source.clone(), None, at)),
            remove: remove.clone(),
            event: Some(event(at)),
            ..Commit::default()
        },
    };
    let intent = host.intend(&intent).await?;
    // Given up if this ends before the commit (settled by what the
    // provider holds).
    let claim = Claimed::new(&host, intent.clone());
    let cap = res.op.info().capability();
    let mut known = source.clone();
    if is_move && cap.rename {
        res.op
            .rename(from.as_str(), to.as_str())
            .await
            .map_err(|e| provider_problem(&e, &res.row.provider, what))?;
    } else if cap.copy {
        res.op
            .copy(from.as_str(), to.as_str())
            .await
            .map_err(|e| provider_problem(&e, &res.row.provider, what))?;
    } else {
        // No native copy: stream the bytes through, checksumming them.
        let stream = read_stream(&res.op, from.as_str(), 0..src.size).await?;
        let content_type = src.meta.as_ref().and_then(|m| m.content_type.clone());
        let mut staged = stage(
            &res.op,
            to.as_str(),
            content_type.as_deref(),
            stream,
            Vec::new(),
            &|_| {},
        )
        .await
        .map_err(|e| match e {
            StageError::Provider(e) => provider_problem(&e, &res.row.provider, what),
            StageError::Source(e) => {
                tracing::warn!(error = %e, "reading the source of a copy failed");
                Problem::new(
                    ErrorCode::ProviderUnavailable,
                    "the source could not be read",
                )
                .with_retry_after(1)
            }
            StageError::TooLarge => ferry_common::content::files::one_shot_too_large(),
        })?;
        staged
            .writer
            .close()
            .await
            .map_err(|e| provider_problem(&e, &res.row.provider, what))?;
        let sums = staged.sums;
        known = ObjectMeta {
            generation: 0,
            connection_id: conn_id.to_owned(),
            path: to.as_str().to_owned(),
            size: sums.len as i64,
            crc64nvme: sums.crc64nvme,
            sha256: src.meta.as_ref().and_then(|m| m.sha256.clone()),
            content_type,
            etag: etag_for(sums.crc64nvme, sums.len),
            provider_modified_ms: None,
            updated_at: 0,
            headers: src
                .meta
                .as_ref()
                .map(|m| m.headers.clone())
                .unwrap_or_default(),
        };
    }
    if is_move && !cap.rename {
        res.op
            .delete(from.as_str())
            .await
            .map_err(|e| provider_problem(&e, &res.row.provider, what))?;
    }

    let modified_ms = res
        .op
        .stat(to.as_str())
        .await
        .ok()
        .and_then(|m| m.last_modified())
        .map(|t| t.into_inner().as_millisecond());
    let now = now_ms();
    let meta = placed(known, modified_ms, now);
    state
        .store
        .commit(&Commit {
            upsert: Some(meta.clone()),
            remove,
            event: Some(event(now)),
            intent,
            ..Commit::default()
        })
        .await
        .map_err(|e| store_problem(state, e))?;
    claim.done();
    Ok(json(
        StatusCode::CREATED,
        &file_json(to.as_str(), src.size, &meta.etag, Some(&meta), modified_ms),
    ))
}

/// What ferry records of the file at `path`, read back whole: its size and
/// CRC64/NVME, and the media type the provider gives.
async fn checksummed(res: &Resolved, path: &str) -> Result<ObjectMeta, Problem> {
    let stat = res
        .op
        .stat(path)
        .await
        .map_err(|e| provider_problem(&e, &res.row.provider, "stat"))?;
    let sums = checksums_of(
        &res.op,
        path,
        stat.content_length(),
        Vec::new(),
        "reading a copy's source",
    )
    .await?;
    Ok(ObjectMeta {
        generation: 0,
        connection_id: res.row.id.clone(),
        path: path.to_owned(),
        size: sums.len as i64,
        crc64nvme: sums.crc64nvme,
        sha256: None,
        content_type: stat.content_type().map(str::to_owned),
        etag: etag_for(sums.crc64nvme, sums.len),
        provider_modified_ms: None,
        updated_at: 0,
        headers: Vec::new(),
    })
}
