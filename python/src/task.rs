//! `chimaera.Task`, `chimaera.TaskBatch` and `chimaera.wait_all`: waiting
//! without the interpreter lock, in slices so that Ctrl-C (any signal
//! handler) runs within [`SIGNAL_CHECK`], and settling each task once.
//!
//! A batch keeps its tasks' states in one object, not one Python object
//! per task: allocating, and above all garbage-collecting, a million task
//! objects a second cost a fifth of the pipelined rate.
//!
//! A task is settled when its outcome (the output bytes or the task's
//! error) has been copied out of shared memory; its record then goes back
//! to the runtime at once, not when Python frees the object. Several
//! threads may wait for one task: each holds a read lock on the handle while
//! it waits, and the record is given back by the settling thread when it is
//! the only one holding it, else when the object goes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use chimaera_client::{ClientError, OwnedTaskHandle};
use pyo3::exceptions::{PyIndexError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PySlice};

use crate::errors::{caller_timed_out, to_py};

/// How long a wait runs without the interpreter lock before it takes it to
/// run pending signal handlers (KeyboardInterrupt). The client also checks
/// the runtime's life at the end of each slice.
pub(crate) const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// A caller's `timeout` in seconds: None or a number >= 0.
pub(crate) fn limit(timeout: Option<f64>) -> PyResult<Option<(Instant, f64)>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_nan() || t < 0.0 => Err(pyo3::exceptions::PyValueError::new_err(format!(
            "timeout must be None or a number of seconds >= 0, got {t}"
        ))),
        Some(t) if t.is_infinite() || t > 1e9 => Ok(None),
        Some(t) => Ok(Some((Instant::now() + Duration::from_secs_f64(t), t))),
    }
}

/// Waits in slices of at most [`SIGNAL_CHECK`] until `wait` (which waits at
/// most the slice it is given, without the interpreter lock) says done, the
/// caller's deadline passes ([`caller_timed_out`]), a signal handler raises,
/// or `wait` fails.
pub(crate) fn wait_sliced<F>(
    py: Python<'_>,
    deadline: Option<(Instant, f64)>,
    mut wait: F,
) -> PyResult<()>
where
    F: FnMut(Duration) -> Result<bool, ClientError> + Send,
{
    loop {
        let slice = match deadline {
            None => SIGNAL_CHECK,
            Some((d, _)) => d
                .saturating_duration_since(Instant::now())
                .min(SIGNAL_CHECK),
        };
        if py.detach(|| wait(slice)).map_err(|e| to_py(py, e))? {
            return Ok(());
        }
        py.check_signals()?;
        if let Some((d, t)) = deadline
            && Instant::now() >= d
        {
            return Err(caller_timed_out(py, t));
        }
    }
}

/// One task's state, for a `Task` of its own or an entry of a `TaskBatch`:
/// the handle until the task is settled, then its outcome.
pub(crate) struct Slot {
    /// None once settled and given back.
    handle: RwLock<Option<OwnedTaskHandle>>,
    outcome: OnceLock<Result<Py<PyBytes>, PyErr>>,
}

impl Slot {
    pub(crate) fn new(handle: OwnedTaskHandle) -> Slot {
        Slot {
            handle: RwLock::new(Some(handle)),
            outcome: OnceLock::new(),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, Option<OwnedTaskHandle>> {
        // A panic while the lock was held cannot leave the handle half
        // changed: the only writer replaces it whole.
        self.handle.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the outcome of a done task (first caller wins) from the
    /// record `h` still holds.
    fn record_outcome(&self, py: Python<'_>, h: &OwnedTaskHandle) {
        if self.outcome.get().is_some() {
            return;
        }
        let outcome = h
            .output_with(|b| PyBytes::new(py, b).unbind())
            .map_err(|e| to_py(py, e));
        // Not get_or_init: building the exception runs Python code, which
        // may let another thread in to settle this same task meanwhile.
        let _ = self.outcome.set(outcome);
    }

    /// Gives the record back once the outcome is kept, unless another
    /// thread still waits on it (then whoever drops the object does).
    fn release(&self) {
        if let Ok(mut h) = self.handle.try_write() {
            *h = None;
        }
    }

    /// Waits (until `deadline`, if any) and settles the task. Errors are
    /// those of waiting (the caller's timeout, the runtime gone, a signal
    /// handler's); the task's own error is its outcome.
    pub(crate) fn settle(&self, py: Python<'_>, deadline: Option<(Instant, f64)>) -> PyResult<()> {
        if self.outcome.get().is_some() {
            return Ok(());
        }
        {
            let guard = self.read();
            let Some(h) = guard.as_ref() else {
                // Released by another thread, which settled it first.
                return Ok(());
            };
            wait_sliced(py, deadline, |slice| h.wait_done(Some(slice)))?;
            self.record_outcome(py, h);
        }
        self.release();
        Ok(())
    }

    fn outcome(&self, py: Python<'_>) -> PyResult<Py<PyBytes>> {
        match self.outcome.get() {
            Some(Ok(b)) => Ok(b.clone_ref(py)),
            Some(Err(e)) => Err(e.clone_ref(py)),
            None => Err(crate::errors::raise(
                py,
                "ChimaeraError",
                "internal: a settled task has no outcome".into(),
                &[],
            )),
        }
    }

    fn done(&self) -> bool {
        if self.outcome.get().is_some() {
            return true;
        }
        match self.handle.try_read() {
            Ok(g) => g.as_ref().is_none_or(OwnedTaskHandle::is_done),
            // Only a settling thread writes, after the outcome is kept.
            Err(_) => true,
        }
    }
}

enum Place {
    Own(Slot),
    Batch(Py<PyTaskBatch>, usize),
}

/// A submitted task (from `Client.submit`, or an entry of the `TaskBatch`
/// of `Client.submit_many`).
///
/// `wait()` returns its output (bytes) or raises its error; `done()` says
/// whether it has completed. The task keeps a task record of the runtime
/// until it is settled (waited for) or dropped.
#[pyclass(frozen, module = "chimaera", name = "Task")]
pub(crate) struct PyTask {
    place: Place,
    pool: u32,
    method: u32,
}

impl PyTask {
    pub(crate) fn new(handle: OwnedTaskHandle, pool: u32, method: u32) -> PyTask {
        PyTask {
            place: Place::Own(Slot::new(handle)),
            pool,
            method,
        }
    }

    fn slot(&self) -> &Slot {
        match &self.place {
            Place::Own(s) => s,
            Place::Batch(b, i) => &b.get().slots[*i],
        }
    }
}

#[pymethods]
impl PyTask {
    /// Waits for the task and returns its output; raises its error
    /// (`ModuleError`, `NoSuchPool`, `TimedOut` when the runtime timed it
    /// out, ...). With `timeout` (seconds), raises `TimedOut` if it has not
    /// completed by then; the task keeps running and `wait` may be called
    /// again. Waiting does not hold the GIL. Called again after completion,
    /// returns the same bytes (or raises the same error).
    #[pyo3(signature = (timeout = None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyBytes>> {
        let slot = self.slot();
        slot.settle(py, limit(timeout)?)?;
        slot.outcome(py)
    }

    /// Whether the task has completed (successfully or not); never blocks.
    fn done(&self) -> bool {
        self.slot().done()
    }

    /// The task's pool id.
    #[getter]
    fn pool(&self) -> u32 {
        self.pool
    }

    /// The task's method number.
    #[getter]
    fn method(&self) -> u32 {
        self.method
    }

    fn __repr__(&self) -> String {
        let state = if self.done() { "done" } else { "pending" };
        format!(
            "<chimaera.Task pool={} method={} {state}>",
            self.pool, self.method
        )
    }
}

/// The tasks of one `Client.submit_many`, in order: a sequence of `Task`s
/// (`len`, indexing, iteration) that `chimaera.wait_all` waits for whole.
/// It holds the tasks' states itself, one Python object for the batch: a
/// `Task` object is made only when an entry is asked for.
#[pyclass(frozen, sequence, module = "chimaera", name = "TaskBatch")]
pub(crate) struct PyTaskBatch {
    slots: Box<[Slot]>,
    pool: u32,
    method: u32,
}

impl PyTaskBatch {
    pub(crate) fn new(slots: Vec<Slot>, pool: u32, method: u32) -> PyTaskBatch {
        PyTaskBatch {
            slots: slots.into_boxed_slice(),
            pool,
            method,
        }
    }

    fn entry(slf: &Bound<'_, Self>, i: usize) -> PyTask {
        let b = slf.get();
        PyTask {
            place: Place::Batch(slf.clone().unbind(), i),
            pool: b.pool,
            method: b.method,
        }
    }
}

#[pymethods]
impl PyTaskBatch {
    fn __len__(&self) -> usize {
        self.slots.len()
    }

    /// The task at `index` (negative counts from the end), or a list of
    /// the tasks of a slice.
    fn __getitem__<'py>(
        slf: &Bound<'py, Self>,
        index: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let len = slf.get().slots.len();
        if let Ok(s) = index.cast::<PySlice>() {
            let ix = s.indices(len as isize)?;
            let mut out = Vec::with_capacity(ix.slicelength);
            let mut i = ix.start;
            for _ in 0..ix.slicelength {
                out.push(Self::entry(slf, i as usize));
                i += ix.step;
            }
            return Ok(PyList::new(py, out)?.into_any());
        }
        let i: isize = index.extract()?;
        let at = if i < 0 { i + len as isize } else { i };
        if at < 0 || at as usize >= len {
            return Err(PyIndexError::new_err(format!(
                "task index {i} out of range for a batch of {len}"
            )));
        }
        Ok(Bound::new(py, Self::entry(slf, at as usize))?.into_any())
    }

    fn __iter__(slf: &Bound<'_, Self>) -> PyTaskBatchIter {
        PyTaskBatchIter {
            batch: slf.clone().unbind(),
            next: AtomicUsize::new(0),
        }
    }

    /// The tasks' pool id.
    #[getter]
    fn pool(&self) -> u32 {
        self.pool
    }

    /// The tasks' method number.
    #[getter]
    fn method(&self) -> u32 {
        self.method
    }

    fn __repr__(&self) -> String {
        let done = self.slots.iter().filter(|s| s.done()).count();
        format!(
            "<chimaera.TaskBatch of {} tasks, pool={} method={}, {done} done>",
            self.slots.len(),
            self.pool,
            self.method
        )
    }
}

/// Iterator over a `TaskBatch`.
#[pyclass(frozen, module = "chimaera", name = "TaskBatchIterator")]
pub(crate) struct PyTaskBatchIter {
    batch: Py<PyTaskBatch>,
    next: AtomicUsize,
}

#[pymethods]
impl PyTaskBatchIter {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> Option<PyTask> {
        let batch = self.batch.bind(py);
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < batch.get().slots.len()).then(|| PyTaskBatch::entry(batch, i))
    }
}

/// Waits for every task of `tasks` (a `TaskBatch`, or an iterable of
/// `Task`s and `TaskBatch`es) and returns their outputs in order, releasing
/// the GIL once for the whole wait (per 100 ms slice, to let signal
/// handlers run).
///
/// A task that failed raises its error (the first such task's, in order),
/// unless `return_exceptions` is true: then its exception takes its place
/// in the list. Errors of waiting itself (`timeout` passed: `TimedOut`;
/// the runtime died: `RuntimeGone`) are raised either way, and leave the
/// tasks that were not settled waitable again.
#[pyfunction]
#[pyo3(signature = (tasks, timeout = None, return_exceptions = false))]
pub(crate) fn wait_all<'py>(
    py: Python<'py>,
    tasks: &Bound<'py, PyAny>,
    timeout: Option<f64>,
    return_exceptions: bool,
) -> PyResult<Bound<'py, PyList>> {
    let deadline = limit(timeout)?;
    // The objects that own the slots, kept while the slots are borrowed.
    let owners: Vec<Bound<'py, PyAny>> = if tasks.is_instance_of::<PyTaskBatch>() {
        vec![tasks.clone()]
    } else if let Ok(list) = tasks.cast::<PyList>() {
        list.iter().collect()
    } else {
        tasks.try_iter()?.collect::<PyResult<_>>()?
    };
    let mut slots: Vec<&Slot> = Vec::new();
    for o in &owners {
        if let Ok(batch) = o.cast::<PyTaskBatch>() {
            slots.extend(batch.get().slots.iter());
        } else if let Ok(task) = o.cast::<PyTask>() {
            slots.push(task.get().slot());
        } else {
            return Err(PyTypeError::new_err(format!(
                "wait_all takes Tasks and TaskBatches, not {}",
                o.get_type()
                    .name()
                    .map_or_else(|_| "that".to_string(), |n| n.to_string())
            )));
        }
    }
    {
        // Every task not yet settled, with its handle read-locked for the
        // whole wait (another thread's settle cannot give it back under us).
        let pending: Vec<(&Slot, RwLockReadGuard<'_, Option<OwnedTaskHandle>>)> = slots
            .iter()
            .filter(|s| s.outcome.get().is_none())
            .map(|s| (*s, s.read()))
            .filter(|(_, g)| g.is_some())
            .collect();
        let handles: Vec<&OwnedTaskHandle> =
            pending.iter().filter_map(|(_, g)| g.as_ref()).collect();
        let mut next = 0;
        wait_sliced(py, deadline, |slice| {
            let end = Instant::now() + slice;
            while let Some(h) = handles.get(next) {
                if !h.is_done() {
                    let left = end.saturating_duration_since(Instant::now());
                    if !h.wait_done(Some(left))? {
                        return Ok(false);
                    }
                }
                next += 1;
            }
            Ok(true)
        })?;
        for ((slot, _), h) in pending.iter().zip(&handles) {
            slot.record_outcome(py, h);
        }
    }
    let mut out = Vec::with_capacity(slots.len());
    for slot in &slots {
        slot.release();
        match slot.outcome(py) {
            Ok(b) => out.push(b.into_any()),
            Err(e) if return_exceptions => out.push(e.into_value(py).into_any()),
            Err(e) => return Err(e),
        }
    }
    PyList::new(py, out)
}
