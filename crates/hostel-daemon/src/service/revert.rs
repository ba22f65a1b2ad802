//! One way to undo a half-done operation (after Incus's `revert` helper): each step that
//! makes something registers how to unmake it; the operation ends with
//! [`Revert::success`], which keeps everything, or [`Revert::fail`], which runs the undo
//! steps newest first. A guard dropped without either (a panic, an early return nobody
//! meant) still undoes, on a task of its own.

use futures_util::future::BoxFuture;
use std::future::Future;

/// An undo step; gets the reason the operation failed (for the audit log).
type Undo = Box<dyn FnOnce(String) -> BoxFuture<'static, ()> + Send>;

#[derive(Default)]
pub struct Revert {
    steps: Vec<(&'static str, Undo)>,
}

impl Revert {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers how to undo what was just made. `what` names it in the log.
    pub fn add<F, Fut>(&mut self, what: &'static str, undo: F)
    where
        F: FnOnce(String) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.steps
            .push((what, Box::new(move |reason| Box::pin(undo(reason)))));
    }

    /// Everything is kept.
    pub fn success(mut self) {
        self.steps.clear();
    }

    /// Undoes every registered step, newest first, and waits for that: when the caller
    /// answers, nothing of the operation is left.
    pub async fn fail(mut self, reason: &str) {
        run(std::mem::take(&mut self.steps), reason.to_string()).await;
    }
}

async fn run(steps: Vec<(&'static str, Undo)>, reason: String) {
    for (what, undo) in steps.into_iter().rev() {
        tracing::info!(step = what, %reason, "undoing");
        undo(reason.clone()).await;
    }
}

impl Drop for Revert {
    fn drop(&mut self) {
        if self.steps.is_empty() {
            return;
        }
        let steps = std::mem::take(&mut self.steps);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(run(steps, "the operation was cut short".into()));
            }
            Err(_) => tracing::error!(
                steps = steps.len(),
                "an operation was cut short outside the runtime; its undo steps cannot run"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording(log: &Arc<Mutex<Vec<String>>>, revert: &mut Revert, name: &'static str) {
        let log = log.clone();
        revert.add(name, move |reason| async move {
            log.lock().unwrap().push(format!("{name}: {reason}"));
        });
    }

    #[tokio::test]
    async fn fail_undoes_newest_first_success_keeps_and_drop_undoes() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut r = Revert::new();
        recording(&log, &mut r, "record");
        recording(&log, &mut r, "disks");
        r.fail("no room").await;
        assert_eq!(*log.lock().unwrap(), ["disks: no room", "record: no room"]);

        log.lock().unwrap().clear();
        let mut r = Revert::new();
        recording(&log, &mut r, "record");
        r.success();
        assert!(log.lock().unwrap().is_empty());

        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut r = Revert::new();
        r.add("record", move |_| async move {
            let _ = tx.send(());
        });
        drop(r);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx)
            .await
            .expect("a dropped guard undoes")
            .unwrap();
    }
}
