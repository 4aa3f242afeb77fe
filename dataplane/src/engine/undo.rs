//! One undo mechanism for the apply step of a mutation: each kernel change
//! pushes the step that reverses it; if a later step fails, `rollback`
//! runs them in reverse order, tries every one, and reports every failure
//! (logged, and returned); once the store has committed, `commit` drops them.

use futures::future::BoxFuture;

use crate::error::Error;

/// Steps that reverse what was applied so far, newest last.
#[must_use = "an Undo must end in commit() or rollback()"]
pub struct Undo<'a> {
    steps: Vec<(String, BoxFuture<'a, Result<(), Error>>)>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Self {
        Undo { steps: Vec::new() }
    }

    /// Records how to reverse the change just made (`step` runs only on rollback).
    pub fn push(
        &mut self,
        what: impl Into<String>,
        step: impl Future<Output = Result<(), Error>> + Send + 'a,
    ) {
        self.steps.push((what.into(), Box::pin(step)));
    }

    /// The change is complete: nothing is reversed.
    pub fn commit(self) {}

    /// Ends the apply step with its outcome: commits on success, rolls
    /// back on failure; the outcome is passed on.
    pub async fn settle<T>(self, outcome: Result<T, Error>) -> Result<T, Error> {
        match outcome {
            Ok(v) => {
                self.commit();
                Ok(v)
            }
            Err(e) => {
                self.rollback().await;
                Err(e)
            }
        }
    }

    /// Reverses everything, newest first; every step is tried. Returns the
    /// failures (each also logged), named by what they were undoing.
    pub async fn rollback(self) -> Vec<(String, Error)> {
        let mut failed = Vec::new();
        for (what, step) in self.steps.into_iter().rev() {
            if let Err(e) = step.await {
                tracing::warn!(undoing = %what, error = %e, "undo step failed; reconcile removes what is left");
                failed.push((what, e));
            }
        }
        failed
    }
}

impl Default for Undo<'_> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn rollback_runs_every_step_newest_first_and_reports_each_failure() {
        let log = Mutex::new(Vec::new());
        let mut undo = Undo::new();
        for i in 0..4 {
            let log = &log;
            undo.push(format!("step {i}"), async move {
                log.lock().expect("log").push(i);
                if i % 2 == 1 { Err(Error::Internal(format!("step {i} broke"))) } else { Ok(()) }
            });
        }
        let failed = undo.rollback().await;
        assert_eq!(*log.lock().expect("log"), vec![3, 2, 1, 0], "newest first, none skipped");
        let names: Vec<&str> = failed.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(names, ["step 3", "step 1"]);
    }

    #[tokio::test]
    async fn settle_rolls_back_a_failure_and_keeps_a_success() {
        let ran = Mutex::new(0);
        for (outcome, runs) in [(Ok(7), 0), (Err(Error::Internal("apply failed".into())), 1)] {
            *ran.lock().expect("count") = 0;
            let mut undo = Undo::new();
            undo.push("count", async {
                *ran.lock().expect("count") += 1;
                Ok(())
            });
            let passed_on = undo.settle(outcome).await;
            assert_eq!(*ran.lock().expect("count"), runs);
            assert_eq!(passed_on.is_ok(), runs == 0, "the outcome is passed on");
        }
    }

    #[tokio::test]
    async fn commit_runs_nothing() {
        let ran = Mutex::new(false);
        let mut undo = Undo::new();
        undo.push("never", async {
            *ran.lock().expect("flag") = true;
            Ok(())
        });
        undo.commit();
        assert!(!*ran.lock().expect("flag"));
    }
}
