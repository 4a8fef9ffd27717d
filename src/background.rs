//! Background CPU work (indexing sealed segments for the bucket, and the hot search index) runs
//! on threads of its own at a lower scheduling priority than the WAL writer, the connections and
//! the fetches, so that on a busy machine produce latency is set by the disk and not by
//! tokenising. The threads that Tantivy starts from such a thread (its indexing and merging
//! workers) inherit the priority.

use crate::limits;

#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("cannot start a background thread: {0}")]
    Spawn(std::io::Error),
    #[error("the background work panicked")]
    Panicked,
}

/// Runs `work` on a new thread named `name`, at `limits::BACKGROUND_NICE`, and waits for its
/// result without blocking the async executor.
pub async fn run<T, F>(name: &str, work: F) -> Result<T, BackgroundError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority();
            let _ = done.send(work());
        })
        .map_err(BackgroundError::Spawn)?;
    result.await.map_err(|_| BackgroundError::Panicked)
}

/// Raises this thread's nice value. On Linux a thread id given to `setpriority` names that one
/// thread; raising one's own nice value needs no privilege. Failing to is harmless (the work
/// runs at normal priority), so the result is ignored.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid and setpriority take and return plain integers; no memory is shared.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, thread, limits::BACKGROUND_NICE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_at_a_lower_priority_and_its_result_comes_back() {
        let nice = run("strata-test", || {
            // SAFETY: as above.
            unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
        })
        .await
        .unwrap();
        assert_eq!(nice, limits::BACKGROUND_NICE);
        let panicked = run("strata-test", || panic!("on purpose")).await;
        assert!(matches!(panicked, Err(BackgroundError::Panicked)));
    }
}
