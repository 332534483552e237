//! Running transfers a few at a time: a bounded set of scoped worker threads takes items from a
//! shared queue; the first failure stops new items from starting and is the result.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Runs `work` on every item with at most `workers` at once, in queue order. Returns the first
/// error; items not started by then are never started.
pub(crate) fn for_each_bounded<T: Send, E: Send>(
    items: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let queue = Mutex::new(VecDeque::from(items));
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let next = || {
        if failed.load(Ordering::SeqCst) {
            return None;
        }
        queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front()
    };
    let worker_count = workers.max(1).min(queue_len(&queue));
    std::thread::scope(|scope| {
        for _ in 0..worker_count {
            scope.spawn(|| {
                while let Some(item) = next() {
                    if let Err(error) = work(item) {
                        failed.store(true, Ordering::SeqCst);
                        let mut slot = first_error
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        slot.get_or_insert(error);
                    }
                }
            });
        }
    });
    match first_error
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
    {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn queue_len<T>(queue: &Mutex<VecDeque<T>>) -> usize {
    queue
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .len()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[test]
    fn runs_everything_with_bounded_parallelism() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let result: Result<(), ()> = for_each_bounded((0..12).collect(), 3, |_: i32| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            running.fetch_sub(1, Ordering::SeqCst);
            done.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        assert!(result.is_ok());
        assert_eq!(done.load(Ordering::SeqCst), 12);
        assert!(most.load(Ordering::SeqCst) <= 3);
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        let started = AtomicUsize::new(0);
        let result = for_each_bounded((0..100).collect(), 2, |i: i32| {
            started.fetch_add(1, Ordering::SeqCst);
            if i == 3 {
                Err(i)
            } else {
                Ok(())
            }
        });
        assert_eq!(result, Err(3));
        assert!(started.load(Ordering::SeqCst) < 100);
        let empty: Result<(), ()> = for_each_bounded(Vec::<i32>::new(), 4, |_| Ok(()));
        assert!(empty.is_ok());
    }
}
