//! A prefetching loader: batches are built on a background thread (in parallel with rayon) while the model trains.
//!
//! Batches arrive in job order. Dropping the [`Prefetch`] stops the producer.

use crossbeam_channel::{bounded, Receiver};
use rayon::prelude::*;
use std::thread::JoinHandle;

/// Iterator over results produced ahead of time by a background thread.
#[derive(Debug)]
pub struct Prefetch<T> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
}

/// Runs `build` over `jobs` on a background thread, `depth` results ahead of the consumer, in job order.
///
/// Building uses rayon in chunks of `depth` jobs, so a batch is usually ready before the model asks for it.
/// `build` must not use libtorch (tensors are not `Sync`): produce plain data, convert to tensors in the consumer.
pub fn prefetch<J, T, F>(jobs: Vec<J>, depth: usize, build: F) -> Prefetch<T>
where
    J: Send + Sync + 'static,
    T: Send + 'static,
    F: Fn(&J) -> T + Send + Sync + 'static,
{
    let depth = depth.max(1);
    let (tx, rx) = bounded(depth);
    let handle = std::thread::spawn(move || {
        for chunk in jobs.chunks(depth) {
            let built: Vec<T> = chunk.par_iter().map(&build).collect();
            for item in built {
                if tx.send(item).is_err() {
                    return; // consumer gone
                }
            }
        }
    });
    Prefetch { rx: Some(rx), handle: Some(handle) }
}

impl<T> Iterator for Prefetch<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl<T> Drop for Prefetch<T> {
    fn drop(&mut self) {
        self.rx.take(); // disconnect first so a blocked producer wakes up and exits
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yields_every_job_in_order() {
        let out: Vec<u64> = prefetch((0..100u64).collect(), 4, |j| j * 2).collect();
        assert_eq!(out, (0..100).map(|j| j * 2).collect::<Vec<_>>());
    }

    #[test]
    fn dropping_early_stops_the_producer() {
        let mut p = prefetch((0..10_000u64).collect(), 2, |j| *j);
        assert_eq!(p.next(), Some(0));
        drop(p); // must return (join), not hang
    }
}
