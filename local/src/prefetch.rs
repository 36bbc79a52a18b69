//! The learned prefetch: which project-relative paths a pi version looks up when it starts, learned
//! from its earlier sessions on this machine and handed to the next session's preload (`PII_SESSION`
//! `prefetch`), whose first `fs.changes` subscription has the agent send their lstat (and the bytes
//! of small files) as the change feed's first item. So a start's lookups are cache hits instead of
//! round trips, for whatever pi looks up, without a hand-kept list that goes stale with each pi
//! release: a new pi version costs one slow start, the one that teaches it.
//!
//! What is learned: every call the preload's cache could have answered had it been prefetched
//! (`fs.stat`, `fs.access` of existence, `fs.read`, `fs.realpath`) that reaches pii's endpoint for a
//! path under the project root during the first [`LEARN_WINDOW`] after the session is up. Calls the
//! cache answers never reach pii; the list is therefore merged, not replaced: this session's misses
//! first, then what was known, capped ([`MAX_PATHS`], [`MAX_TOTAL_BYTES`]), so a path pi no longer
//! looks up drifts to the end and out.
//!
//! The store: `<cache dir>/pi-bridge/prefetch/` (0700, owned by the user, not a symlink), one file
//! per pi version, `<package@version>.json` (0600): `{"version":1,"key":…,"paths":[…]}`. Paths
//! only, never contents; every path relative to the project, without `.`/`..`/empty components
//! (checked when recorded and again when read: a tampered file cannot name anything outside the
//! project, and the agent's sandbox confines the prefetch anyway). Writes go to a temp file renamed
//! into place under an exclusive `flock` on `.lock`, so concurrent sessions merge instead of losing
//! each other's paths, and a reader never sees half a file. At most [`MAX_FILES`] versions are kept.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after the session is up lookups are recorded: pi's start, not what it does later.
pub const LEARN_WINDOW: Duration = Duration::from_secs(10);
/// Most paths kept per pi version: what one `fs.changes` call may ask to prefetch.
pub const MAX_PATHS: usize = protocol::watch::PREFETCH_MAX_PATHS;
/// Longest path kept, in bytes.
pub const MAX_PATH_BYTES: usize = 512;
/// Most bytes of paths kept per pi version (the list travels in node's environment, where one
/// variable may not exceed 128 KiB on Linux).
pub const MAX_TOTAL_BYTES: usize = 32 * 1024;
/// Most pi versions kept; the least recently learned go first.
pub const MAX_FILES: usize = 16;
/// A store file larger than this is not read.
const MAX_FILE_BYTES: u64 = 4 * MAX_TOTAL_BYTES as u64;
const FORMAT: u32 = 1;
/// The calls whose answers the preload's cache keeps (`preload/cache.cjs` `lookup`).
const LOOKUPS: [&str; 4] = ["fs.stat", "fs.access", "fs.read", "fs.realpath"];

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {why}; not used", path.display())]
    Unsafe { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A project-relative path fit to keep: `.` (the root), or names joined by `/`, none empty, `.`
/// or `..`, no NUL, not absolute, at most [`MAX_PATH_BYTES`].
pub fn confined(rel: &str) -> bool {
    rel == "."
        || (!rel.is_empty()
            && rel.len() <= MAX_PATH_BYTES
            && !rel.contains('\0')
            && rel
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// `abs` relative to the project root `root`, if it is under it and [`confined`].
pub fn relative(root: &str, abs: &str) -> Option<String> {
    let root = root.trim_end_matches('/');
    let rel = if abs == root || (root.is_empty() && abs == "/") {
        "."
    } else {
        abs.strip_prefix(root)?.strip_prefix('/')?
    };
    confined(rel).then(|| rel.to_string())
}

/// `paths` confined, without repeats, within [`MAX_PATHS`] and [`MAX_TOTAL_BYTES`], in order.
fn bounded<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut out = vec![];
    let mut bytes = 0;
    for p in paths {
        if out.len() == MAX_PATHS {
            break;
        }
        if !confined(p) || bytes + p.len() > MAX_TOTAL_BYTES || !seen.insert(p) {
            continue;
        }
        bytes += p.len();
        out.push(p.to_string());
    }
    out
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Saved {
    version: u32,
    key: String,
    paths: Vec<String>,
}

/// `dir`, created 0700 if missing: an existing one must be a directory owned by this user and
/// not a symlink; group/other permissions are taken away. (The learned lists, node's compile
/// cache.)
pub fn private_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir))?;
    let m = std::fs::symlink_metadata(dir).map_err(io(dir))?;
    let unsafe_dir = |why: &str| StoreError::Unsafe {
        path: dir.to_path_buf(),
        why: why.into(),
    };
    if !m.file_type().is_dir() {
        return Err(unsafe_dir("not a directory (a symlink?)"));
    }
    // SAFETY: geteuid has no preconditions.
    if m.uid() != rustix::process::geteuid().as_raw() {
        return Err(unsafe_dir("owned by another user"));
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// The directory of learned lists.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// `<cache>/prefetch`, created 0700 if missing. An existing one must be a directory owned by
    /// this user and not a symlink; group/other permissions are taken away.
    pub fn open(cache: &Path) -> Result<Store, StoreError> {
        let dir = cache.join("prefetch");
        private_dir(&dir)?;
        Ok(Store { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of `key` (`package@version`): its characters outside `[A-Za-z0-9._@-]` become
    /// `+` (for `/`) or `_`; the key inside the file tells apart names that map to the same file.
    pub fn file(&self, key: &str) -> PathBuf {
        let name: String = key
            .chars()
            .take(200)
            .map(|c| match c {
                '/' => '+',
                c if c.is_ascii_alphanumeric() || "._@-".contains(c) => c,
                _ => '_',
            })
            .collect();
        // A leading dot would hide it among the temp and lock files.
        self.dir
            .join(format!("{}.json", name.trim_start_matches('.')))
    }

    /// What was learned for `key`, checked again; nothing when the file is missing, is not a
    /// regular file of this user, is too large, is not this format, or names another key.
    pub fn load(&self, key: &str) -> Vec<String> {
        let path = self.file(key);
        match self.read(&path, key) {
            Ok(paths) => paths,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(e) => {
                tracing::warn!("prefetch: ignoring {}: {e}", path.display());
                vec![]
            }
        }
    }

    fn read(&self, path: &Path, key: &str) -> std::io::Result<Vec<String>> {
        use std::io::Read;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path)?;
        let m = f.metadata()?;
        let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
        // SAFETY: geteuid has no preconditions.
        if !m.is_file() || m.uid() != rustix::process::geteuid().as_raw() {
            return Err(bad("not a regular file of this user"));
        }
        let mut text = String::new();
        f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(bad("too large"));
        }
        let saved: Saved = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
        if saved.version != FORMAT || saved.key != key {
            return Err(bad("another format or another pi version"));
        }
        Ok(bounded(saved.paths.iter().map(String::as_str)))
    }

    /// Merge `seen` (this session's lookups, first) into what is kept for `key`, under the lock.
    /// Returns how many paths are kept now.
    pub fn learn(&self, key: &str, seen: &[String]) -> Result<usize, StoreError> {
        let lock_path = self.dir.join(".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        // Closing `lock` releases it.
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(&lock_path)(e.into()))?;
        let path = self.file(key);
        let known = self.load(key);
        let merged = bounded(seen.iter().chain(&known).map(String::as_str));
        if merged == known {
            return Ok(known.len());
        }
        let body = serde_json::to_vec(&Saved {
            version: FORMAT,
            key: key.to_string(),
            paths: merged.clone(),
        })
        .expect("a list of strings serializes");
        let suffix = protocol::secret::random_hex(6);
        let tmp = self
            .dir
            .join(format!(".tmp-{}-{suffix}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(&path)(e));
        }
        self.prune(&path);
        drop(lock);
        Ok(merged.len())
    }

    /// Keep the [`MAX_FILES`] most recently written lists (`keep` among them); remove temp files
    /// a crashed writer left more than ten minutes ago.
    fn prune(&self, keep: &Path) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut lists = vec![];
        let now = std::time::SystemTime::now();
        for e in entries.flatten() {
            let (path, name) = (e.path(), e.file_name().to_string_lossy().into_owned());
            let Ok(m) = e.metadata() else { continue };
            let modified = m.modified().unwrap_or(now);
            if name.starts_with(".tmp-") {
                if now.duration_since(modified).unwrap_or_default() > Duration::from_secs(600) {
                    let _ = std::fs::remove_file(&path);
                }
            } else if name.ends_with(".json") && path != keep {
                lists.push((modified, path));
            }
        }
        lists.sort();
        let extra = (lists.len() + 1).saturating_sub(MAX_FILES);
        for (_, path) in lists.into_iter().take(extra) {
            tracing::info!("prefetch: removing the oldest list {}", path.display());
            let _ = std::fs::remove_file(path);
        }
    }
}

/// One session's learning for one pi version.
pub struct Learner {
    key: String,
    store: Store,
    known: Vec<String>,
    state: Mutex<Window>,
    /// Set once the window's paths are saved: every caller of [`Learner::finish`] waits for it.
    saved: tokio::sync::OnceCell<()>,
}

#[derive(Default)]
struct Window {
    opened: Option<Instant>,
    seen: Vec<String>,
    set: HashSet<String>,
    finished: bool,
}

impl Learner {
    /// The learner for `key` in `store`, with what earlier sessions learned.
    pub fn new(store: Store, key: String) -> Arc<Learner> {
        let known = store.load(&key);
        tracing::info!(
            "prefetch: {} learned path(s) for {key} in {}",
            known.len(),
            store.dir().display()
        );
        Arc::new(Learner {
            key,
            store,
            known,
            state: Mutex::default(),
            saved: tokio::sync::OnceCell::new(),
        })
    }

    /// What to prefetch this session.
    pub fn known(&self) -> &[String] {
        &self.known
    }

    /// The session is up: lookups are recorded from now for [`LEARN_WINDOW`].
    pub fn open_window(&self) {
        let mut w = self.state.lock().expect("learner lock");
        w.opened.get_or_insert_with(Instant::now);
    }

    /// A call the endpoint is about to forward to the agent (`params` as the client sent them).
    pub fn observe(&self, root: &str, method: &str, params: Option<&serde_json::value::RawValue>) {
        if !LOOKUPS.contains(&method) {
            return;
        }
        let mut w = self.state.lock().expect("learner lock");
        match w.opened {
            Some(t) if !w.finished && t.elapsed() <= LEARN_WINDOW && w.seen.len() < MAX_PATHS => {}
            _ => return,
        }
        #[derive(Deserialize)]
        struct Lookup<'a> {
            #[serde(borrow)]
            path: std::borrow::Cow<'a, str>,
            #[serde(default)]
            mode: u32,
        }
        let Some(q) = params.and_then(|p| serde_json::from_str::<Lookup>(p.get()).ok()) else {
            return;
        };
        // Only existence checks are answered from the cache.
        if method == "fs.access" && q.mode != 0 {
            return;
        }
        let Some(rel) = relative(root, &q.path) else {
            return;
        };
        // Its directories first: the agent flags a missing path cacheable only when its parent
        // is watched, so `.pi/commands` in a project without `.pi` is answered from the cache by
        // the cached absence of `.pi` (preload/cache.cjs: under a missing path, nothing exists).
        let ancestors = rel.match_indices('/').map(|(i, _)| &rel[..i]);
        for p in ancestors.chain([rel.as_str()]) {
            if w.seen.len() < MAX_PATHS && w.set.insert(p.to_string()) {
                w.seen.push(p.to_string());
            }
        }
    }

    /// Close the window and keep what it saw, once: a later call (the session's end racing the
    /// window's timer) waits until the first one has saved, so pii never exits mid-save.
    pub async fn finish(self: &Arc<Self>) {
        self.saved.get_or_init(|| self.save()).await;
    }

    async fn save(self: &Arc<Self>) {
        let seen = {
            let mut w = self.state.lock().expect("learner lock");
            if w.finished {
                return;
            }
            w.finished = true;
            std::mem::take(&mut w.seen)
        };
        if seen.is_empty() {
            tracing::info!("prefetch: nothing new to learn for {}", self.key);
            return;
        }
        let me = self.clone();
        let n = seen.len();
        let saved = tokio::task::spawn_blocking(move || me.store.learn(&me.key, &seen)).await;
        match saved {
            Ok(Ok(kept)) => tracing::info!(
                "prefetch: learned {n} startup lookup(s) for {}; {kept} kept",
                self.key
            ),
            Ok(Err(e)) => tracing::warn!("prefetch: {e}"),
            Err(e) => tracing::warn!("prefetch: saving failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_confined_project_relative_paths() {
        for ok in [
            ".",
            "AGENTS.md",
            ".pi/settings.json",
            "a b/ü/日本",
            "x..y",
            "...z",
        ] {
            assert!(confined(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "..",
            "../x",
            "a/../b",
            "a/..",
            "./a",
            "a/.",
            "a//b",
            "a/",
            "a\0b",
        ] {
            assert!(!confined(bad), "{bad:?}");
        }
        assert!(!confined(&"a".repeat(MAX_PATH_BYTES + 1)));
        assert_eq!(relative("/p/app", "/p/app").as_deref(), Some("."));
        assert_eq!(
            relative("/p/app/", "/p/app/.git/HEAD").as_deref(),
            Some(".git/HEAD")
        );
        assert_eq!(relative("/p/app", "/p/apple/x"), None);
        assert_eq!(relative("/p/app", "/p"), None);
        assert_eq!(relative("/p/app", "/p/app/../etc"), None);
        assert_eq!(relative("/p/app", "/p/app//x"), None);
        assert_eq!(relative("/", "/etc/hosts").as_deref(), Some("etc/hosts"));
        assert_eq!(relative("/", "/").as_deref(), Some("."));
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("pi-bridge")).unwrap();
        (d, s)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().mode() & 0o777
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lists_are_private_per_version_and_merged_newest_first() {
        let (_d, s) = store();
        assert_eq!(mode(s.dir()), 0o700);
        let key = "@earendil-works/pi-coding-agent@1.6.0";
        assert!(s.load(key).is_empty());
        assert_eq!(
            s.learn(key, &strings(&[".", "AGENTS.md", ".git"])).unwrap(),
            3
        );
        let file = s.file(key);
        assert_eq!(
            file.file_name().unwrap(),
            "@earendil-works+pi-coding-agent@1.6.0.json"
        );
        assert_eq!(mode(&file), 0o600);
        assert_eq!(s.load(key), strings(&[".", "AGENTS.md", ".git"]));
        // A later session's misses come first; what was known follows.
        s.learn(key, &strings(&["AGENTS.override.md", "."]))
            .unwrap();
        assert_eq!(
            s.load(key),
            strings(&["AGENTS.override.md", ".", "AGENTS.md", ".git"])
        );
        // Another version has its own list.
        assert!(s.load("@earendil-works/pi-coding-agent@1.6.1").is_empty());
        // Nothing but the lists and the lock: no temp file left.
        let mut names: Vec<String> = std::fs::read_dir(s.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [".lock", "@earendil-works+pi-coding-agent@1.6.0.json"]
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains('\n')
                && text.contains(r#""key":"@earendil-works/pi-coding-agent@1.6.0""#),
            "{text}"
        );
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let (_d, s) = store();
        let many: Vec<String> = (0..MAX_PATHS + 50).map(|i| format!("f{i}")).collect();
        assert_eq!(s.learn("k@1", &many).unwrap(), MAX_PATHS);
        assert_eq!(s.load("k@1"), many[..MAX_PATHS]);
        let long: Vec<String> = (0..200)
            .map(|i| format!("{i:03}{}", "x".repeat(400)))
            .collect();
        let kept = s.learn("k@2", &long).unwrap();
        assert!(
            kept * 403 <= MAX_TOTAL_BYTES && (kept + 1) * 403 > MAX_TOTAL_BYTES,
            "{kept}"
        );
        assert!(std::fs::metadata(s.file("k@2")).unwrap().len() < MAX_FILE_BYTES);
    }

    #[test]
    fn a_tampered_or_foreign_file_yields_only_confined_paths_or_nothing() {
        let (_d, s) = store();
        let file = s.file("k@1");
        let write = |body: &str| std::fs::write(&file, body).unwrap();
        write(
            r#"{"version":1,"key":"k@1","paths":["ok","../../etc/passwd","/etc/shadow","a/./b","also/ok"]}"#,
        );
        assert_eq!(s.load("k@1"), strings(&["ok", "also/ok"]));
        write(r#"{"version":1,"key":"k@2","paths":["ok"]}"#);
        assert!(s.load("k@1").is_empty(), "a list of another key");
        write(r#"{"version":2,"key":"k@1","paths":["ok"]}"#);
        assert!(s.load("k@1").is_empty(), "another format");
        write("not json");
        assert!(s.load("k@1").is_empty());
        write(&format!(
            r#"{{"version":1,"key":"k@1","paths":["{}"]}}"#,
            "a".repeat(MAX_FILE_BYTES as usize)
        ));
        assert!(s.load("k@1").is_empty(), "too large");
        // A bad file is replaced by the next learning, not merged.
        s.learn("k@1", &strings(&["new"])).unwrap();
        assert_eq!(s.load("k@1"), strings(&["new"]));
        // A symlink in its place is not followed.
        std::fs::remove_file(&file).unwrap();
        let elsewhere = s.dir().parent().unwrap().join("elsewhere.json");
        std::fs::write(&elsewhere, r#"{"version":1,"key":"k@1","paths":["x"]}"#).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert!(s.load("k@1").is_empty());
    }

    #[test]
    fn the_directory_must_be_the_users_own() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let cache = d.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::os::unix::fs::symlink(&real, cache.join("prefetch")).unwrap();
        let err = Store::open(&cache).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        // Too open: closed again.
        let open = d.path().join("open");
        std::fs::create_dir_all(open.join("prefetch")).unwrap();
        std::fs::set_permissions(
            open.join("prefetch"),
            std::fs::Permissions::from_mode(0o777),
        )
        .unwrap();
        let s = Store::open(&open).unwrap();
        assert_eq!(mode(s.dir()), 0o700);
    }

    #[test]
    fn concurrent_sessions_merge_without_losing_paths() {
        let (_d, s) = store();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for i in 0..10 {
                        s.learn("k@1", &[format!("t{t}/{i}")]).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut got = s.load("k@1");
        got.sort();
        let mut want: Vec<String> = (0..8)
            .flat_map(|t| (0..10).map(move |i| format!("t{t}/{i}")))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn old_versions_are_pruned() {
        let (_d, s) = store();
        for i in 0..MAX_FILES + 3 {
            s.learn(&format!("k@{i}"), &strings(&["a"])).unwrap();
            // mtimes must differ for the order to be defined
            std::thread::sleep(Duration::from_millis(5));
        }
        let lists = std::fs::read_dir(s.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count();
        assert_eq!(lists, MAX_FILES);
        assert!(s.load("k@0").is_empty() && s.load("k@2").is_empty());
        assert_eq!(s.load(&format!("k@{}", MAX_FILES + 2)), strings(&["a"]));
    }

    #[tokio::test]
    async fn a_learner_records_lookups_under_the_root_within_its_window_once() {
        let (_d, s) = store();
        let l = Learner::new(s.clone(), "k@1".into());
        let raw = |j: &str| serde_json::value::RawValue::from_string(j.into()).unwrap();
        let root = "/home/u/app";
        // Before the session is up: nothing.
        l.observe(
            root,
            "fs.stat",
            Some(&raw(r#"{"path":"/home/u/app/early"}"#)),
        );
        l.open_window();
        for (m, p) in [
            ("fs.stat", r#"{"path":"/home/u/app","lstat":true}"#),
            ("fs.stat", r#"{"path":"/home/u/app/AGENTS.override.md"}"#),
            ("fs.read", r#"{"path":"/home/u/app/.git/HEAD"}"#),
            ("fs.access", r#"{"path":"/home/u/app/.pi/mcp.json"}"#),
            ("fs.access", r#"{"path":"/home/u/app/readable","mode":4}"#),
            ("fs.realpath", r#"{"path":"/home/u/app/.git"}"#),
            ("fs.readdir", r#"{"path":"/home/u/app/src"}"#),
            ("fs.write", r#"{"path":"/home/u/app/out","data":""}"#),
            ("fs.stat", r#"{"path":"/home/u/other"}"#),
            ("fs.stat", r#"{"path":"/home/u/app/AGENTS.override.md"}"#),
            ("fs.stat", r#"{"nopath":1}"#),
        ] {
            l.observe(root, m, Some(&raw(p)));
        }
        l.finish().await;
        assert_eq!(
            s.load("k@1"),
            strings(&[
                ".",
                "AGENTS.override.md",
                ".git",
                ".git/HEAD",
                ".pi",
                ".pi/mcp.json"
            ])
        );
        // Finished: nothing more is recorded or written.
        l.observe(
            root,
            "fs.stat",
            Some(&raw(r#"{"path":"/home/u/app/late"}"#)),
        );
        l.finish().await;
        assert_eq!(s.load("k@1").len(), 6);
        // The next session starts with them.
        assert_eq!(Learner::new(s.clone(), "k@1".into()).known().len(), 6);
    }

    #[tokio::test]
    async fn a_finish_racing_the_windows_timer_returns_only_once_the_paths_are_saved() {
        let (_d, s) = store();
        let l = Learner::new(s.clone(), "k@2".into());
        let raw = |j: &str| serde_json::value::RawValue::from_string(j.into()).unwrap();
        l.open_window();
        l.observe("/p", "fs.stat", Some(&raw(r#"{"path":"/p/AGENTS.md"}"#)));
        // The timer's finish starts saving first; the session's end (pii about to exit) must not
        // return before that save is on disk.
        let (_, after_exit) = tokio::join!(l.finish(), async {
            l.finish().await;
            s.load("k@2")
        });
        assert_eq!(after_exit, strings(&["AGENTS.md"]));
    }
}
