use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

/// Manages a collection of threads.
///
/// A new thread is created every time all the existing threads are full.
/// Any idle thread will automatically die after a few seconds.
pub struct TaskPool {
    sharing: Arc<Sharing>,
}

struct Sharing {
    // list of the tasks to be done by worker threads
    todo: Mutex<VecDeque<Box<dyn FnMut() + Send>>>,

    // condvar that will be notified whenever a task is added to `todo`
    condvar: Condvar,

    // number of total worker threads running
    active_tasks: AtomicUsize,

    // number of idle worker threads
    waiting_tasks: AtomicUsize,

    // set by `join`: idle threads end at once
    closing: std::sync::atomic::AtomicBool,

    // every thread started, to be joined
    handles: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// Minimum number of active threads.
static MIN_THREADS: usize = 4;

struct Registration<'a> {
    nb: &'a AtomicUsize,
}

impl<'a> Registration<'a> {
    fn new(nb: &'a AtomicUsize) -> Registration<'a> {
        nb.fetch_add(1, Ordering::Release);
        Registration { nb }
    }
}

impl<'a> Drop for Registration<'a> {
    fn drop(&mut self) {
        self.nb.fetch_sub(1, Ordering::Release);
    }
}

impl TaskPool {
    pub fn new() -> TaskPool {
        let pool = TaskPool {
            sharing: Arc::new(Sharing {
                todo: Mutex::new(VecDeque::new()),
                condvar: Condvar::new(),
                active_tasks: AtomicUsize::new(0),
                waiting_tasks: AtomicUsize::new(0),
                closing: std::sync::atomic::AtomicBool::new(false),
                handles: Mutex::new(Vec::new()),
            }),
        };

        for _ in 0..MIN_THREADS {
            pool.add_thread(None)
        }

        pool
    }

    /// Executes a function in a thread.
    /// If no thread is available, spawns a new one.
    pub fn spawn(&self, code: Box<dyn FnMut() + Send>) {
        let mut queue = self.sharing.todo.lock().unwrap();

        // Idle threads already woken for queued tasks are still counted as
        // waiting until they take them: only an idle thread beyond those is
        // free. Upstream checked for zero idle threads, so in a burst a task
        // (a whole connection) could wait behind another connection's life.
        if self.sharing.waiting_tasks.load(Ordering::Acquire) <= queue.len() {
            self.add_thread(Some(code));
        } else {
            queue.push_back(code);
            self.sharing.condvar.notify_one();
        }
    }

    fn add_thread(&self, initial_fn: Option<Box<dyn FnMut() + Send>>) {
        let sharing = self.sharing.clone();
        let mut handles = self
            .sharing
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // Finished threads are let go here, so the list stays as long as
        // the threads alive.
        handles.retain(|h| !h.is_finished());

        let handle = thread::spawn(move || {
            let sharing = sharing;
            let _active_guard = Registration::new(&sharing.active_tasks);

            if let Some(mut f) = initial_fn {
                f();
            }

            loop {
                let mut task: Box<dyn FnMut() + Send> = {
                    let mut todo = sharing.todo.lock().unwrap();

                    let task;
                    loop {
                        if let Some(poped_task) = todo.pop_front() {
                            task = poped_task;
                            break;
                        }
                        if sharing.closing.load(Ordering::Acquire) {
                            return;
                        }
                        let _waiting_guard = Registration::new(&sharing.waiting_tasks);

                        let received =
                            if sharing.active_tasks.load(Ordering::Acquire) <= MIN_THREADS
                                && !sharing.closing.load(Ordering::Acquire)
                            {
                                todo = sharing.condvar.wait(todo).unwrap();
                                true
                            } else {
                                let (new_lock, waitres) = sharing
                                    .condvar
                                    .wait_timeout(todo, Duration::from_millis(5000))
                                    .unwrap();
                                todo = new_lock;
                                !waitres.timed_out()
                            };

                        if !received && todo.is_empty() {
                            return;
                        }
                    }

                    task
                };

                task();
            }
        });
        handles.push(handle);
    }

    /// Lets idle threads end and waits until every thread has, or
    /// `deadline` has passed; returns whether all did (patched in for
    /// tinysse: see PATCHES.md). Tasks still queued are run first.
    pub fn join(&self, deadline: Option<std::time::Instant>) -> bool {
        self.sharing.closing.store(true, Ordering::Release);
        {
            // Under the queue's lock, so no thread is between its check of
            // `closing` and its wait.
            let _todo = self.sharing.todo.lock().unwrap_or_else(|p| p.into_inner());
            self.sharing.condvar.notify_all();
        }
        let handles: Vec<_> = self
            .sharing
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        let mut pending = Vec::new();
        for h in handles {
            // A thread's end is waited for with a bounded poll: a join
            // cannot time out, and a thread stuck past the deadline is
            // left to the process's exit.
            while !h.is_finished() && deadline.is_none_or(|d| std::time::Instant::now() < d) {
                thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                pending.push(h);
            }
        }
        let all = pending.is_empty();
        // Kept, so a second call can wait for them again.
        self.sharing
            .handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(pending);
        all
    }
}

impl Drop for TaskPool {
    fn drop(&mut self) {
        self.sharing
            .active_tasks
            .store(999_999_999, Ordering::Release);
        self.sharing.condvar.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::TaskPool;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    #[test]
    fn join_waits_for_running_tasks_and_ends_idle_threads() {
        let pool = TaskPool::new();
        let (tx, rx) = mpsc::channel::<()>();
        pool.spawn(Box::new(move || {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        }));
        // A task still running: not joined by the deadline.
        assert!(!pool.join(Some(Instant::now() + Duration::from_millis(50))));
        drop(tx);
        // Once it ends, every thread (the idle ones too) is joined at once.
        let t = Instant::now();
        assert!(pool.join(Some(Instant::now() + Duration::from_secs(5))));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}
