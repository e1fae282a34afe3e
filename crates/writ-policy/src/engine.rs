//! The live engine: the serving bundle behind an atomic pointer, reload (on demand or when the
//! directory changes), and a candidate bundle evaluated in shadow.
//!
//! Evaluation takes one lock-free load of the current bundle and never blocks on a reload; a
//! reload builds the new bundle completely before swapping it in, so a request sees either the old
//! bundle or the new one, never a mixture. A bundle that fails to load is refused and logged; the
//! last good bundle keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use notify_debouncer_mini::{DebounceEventResult, Debouncer, new_debouncer, notify};
use serde::Serialize;

use crate::bundle::{Bundle, BundleVersion};
use crate::error::{BundleError, WatchError};
use crate::request::PolicyRequest;
use crate::verdict::Verdict;

/// What the live bundle and the candidate said about the same request. Only `live` takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShadowResult {
    pub live: Verdict,
    pub candidate: Verdict,
    /// The outcomes differ (kind, or approval requirement); explanations are not compared.
    pub disagrees: bool,
}

impl ShadowResult {
    pub fn compare(live: &Bundle, candidate: &Bundle, request: &PolicyRequest) -> Self {
        let live = live.evaluate(request);
        let candidate = candidate.evaluate(request);
        let disagrees = !live.same_outcome(&candidate);
        Self {
            live,
            candidate,
            disagrees,
        }
    }
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The files hash to the serving version; nothing was swapped.
    Unchanged { version: BundleVersion },
    Reloaded {
        from: BundleVersion,
        to: BundleVersion,
    },
}

/// The policy decision point of a Writ server.
#[derive(Debug)]
pub struct PolicyEngine {
    live: ArcSwap<Bundle>,
    candidate: ArcSwapOption<Bundle>,
    /// Where reloads read from; `None` for an engine built from a bundle in memory.
    dir: Option<PathBuf>,
    last_error: ArcSwapOption<String>,
}

impl PolicyEngine {
    /// Serves `bundle`. When it was loaded from a directory, [`Self::reload`] and [`Self::watch`]
    /// read that directory again.
    pub fn new(bundle: Bundle) -> Self {
        let dir = bundle.dir().map(Path::to_path_buf);
        Self {
            live: ArcSwap::from_pointee(bundle),
            candidate: ArcSwapOption::empty(),
            dir,
            last_error: ArcSwapOption::empty(),
        }
    }

    /// Loads the bundle in `dir` and serves it.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        Ok(Self::new(Bundle::load(dir)?))
    }

    /// The verdict of the serving bundle. Synchronous, no I/O, no lock.
    pub fn evaluate(&self, request: &PolicyRequest) -> Verdict {
        self.live.load().evaluate(request)
    }

    /// The serving bundle's verdict, and the candidate's beside it when one is set.
    pub fn evaluate_with_shadow(&self, request: &PolicyRequest) -> (Verdict, Option<ShadowResult>) {
        let live = self.live.load_full();
        match self.candidate.load_full() {
            None => (live.evaluate(request), None),
            Some(candidate) => {
                let shadow = ShadowResult::compare(&live, &candidate, request);
                (shadow.live.clone(), Some(shadow))
            }
        }
    }

    /// The serving bundle (a snapshot: it stays valid across reloads).
    pub fn current(&self) -> Arc<Bundle> {
        self.live.load_full()
    }

    pub fn version(&self) -> BundleVersion {
        self.live.load().version().clone()
    }

    /// Serves `bundle` from now on; returns the one it replaces.
    pub fn replace(&self, bundle: Bundle) -> Arc<Bundle> {
        self.live.swap(Arc::new(bundle))
    }

    /// Evaluates `candidate` in shadow beside the serving bundle (`None` stops shadowing).
    pub fn set_candidate(&self, candidate: Option<Bundle>) {
        self.candidate.store(candidate.map(Arc::new));
    }

    pub fn candidate(&self) -> Option<Arc<Bundle>> {
        self.candidate.load_full()
    }

    /// The error of the last refused reload, cleared by the next successful one.
    pub fn last_reload_error(&self) -> Option<String> {
        self.last_error.load_full().map(|e| (*e).clone())
    }

    /// Reads the bundle directory again and serves it if it is valid. On error the serving bundle
    /// stays, the error is logged and returned.
    pub fn reload(&self) -> Result<ReloadOutcome, BundleError> {
        let Some(dir) = &self.dir else {
            return Err(BundleError::Layout {
                dir: self.live.load().root().to_path_buf(),
                problem:
                    "this engine was built from a bundle in memory and has no directory to reload"
                        .into(),
            });
        };
        match Bundle::load(dir) {
            Ok(bundle) => {
                self.last_error.store(None);
                let from = self.version();
                if *bundle.version() == from {
                    return Ok(ReloadOutcome::Unchanged { version: from });
                }
                let to = bundle.version().clone();
                self.live.store(Arc::new(bundle));
                tracing::info!(dir = %dir.display(), %from, %to, "policy bundle reloaded");
                Ok(ReloadOutcome::Reloaded { from, to })
            }
            Err(e) => {
                tracing::error!(
                    dir = %dir.display(),
                    serving = %self.version(),
                    error = %e,
                    "policy bundle refused; the last good bundle keeps serving"
                );
                self.last_error.store(Some(Arc::new(e.to_string())));
                Err(e)
            }
        }
    }

    /// Reloads whenever a file under the bundle directory changes, once the changes have been
    /// quiet for `debounce`. Watching stops when the returned value is dropped (or the engine is).
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<BundleWatcher, WatchError> {
        let dir = self.dir.clone().ok_or_else(|| WatchError {
            dir: self.live.load().root().to_path_buf(),
            message: "this engine was built from a bundle in memory".into(),
        })?;
        let engine: Weak<Self> = Arc::downgrade(self);
        let watched = dir.clone();
        let mut debouncer = new_debouncer(debounce, move |events: DebounceEventResult| {
            let Some(engine) = engine.upgrade() else { return };
            match events {
                Ok(events) if events.is_empty() => {}
                // Errors are logged inside reload; the last good bundle keeps serving.
                Ok(_) => {
                    let _ = engine.reload();
                }
                Err(e) => tracing::warn!(dir = %watched.display(), error = %e, "policy bundle watcher error"),
            }
        })
        .map_err(|e| WatchError { dir: dir.clone(), message: e.to_string() })?;
        debouncer
            .watcher()
            .watch(&dir, notify::RecursiveMode::Recursive)
            .map_err(|e| WatchError {
                dir: dir.clone(),
                message: e.to_string(),
            })?;
        tracing::info!(dir = %dir.display(), "watching the policy bundle for changes");
        Ok(BundleWatcher {
            _debouncer: debouncer,
            dir,
        })
    }
}

/// Keeps a bundle directory watched; drop it to stop.
pub struct BundleWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher>,
    dir: PathBuf,
}

impl BundleWatcher {
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl std::fmt::Debug for BundleWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}
