//! A running task as its module reaches the runtime: the engine's
//! implementation of `chimaera_module::TaskHost`.

use super::*;

/// A running task, as its module reaches the runtime (through
/// [`TaskContext`]): the record it runs, its worker's yielder and the
/// subtasks it submitted, whose references it gives back when it ends.
pub(super) struct EngineTask<'a> {
    pub(super) core: &'a RuntimeCore,
    pub(super) worker: u32,
    pub(super) rec: &'a TaskRecord,
    pub(super) yielder: &'a Yielder<(), Suspend>,
    pub(super) subtasks: Vec<u32>,
}

impl TaskHost for EngineTask<'_> {
    fn input(&self) -> &[u8] {
        self.core.input_of(self.rec)
    }

    fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.core.set_output(self.rec, bytes)
    }

    fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        let ptr = self.core.output_buffer(self.rec, len)?;
        // SAFETY: the output holds `len` bytes and stays allocated until it
        // is replaced (which takes `&mut self`, so not while this slice
        // lives) or the record is freed (not before this task completes);
        // this task's runner is the only one that touches it before DONE.
        Ok(unsafe { std::slice::from_raw_parts_mut(ptr, len) })
    }

    fn yield_now(&self) {
        self.yielder.suspend(Suspend::Yield);
    }

    fn submit(
        &mut self,
        pool: u32,
        method: u32,
        input: &[u8],
        local: bool,
    ) -> Result<Subtask, TaskError> {
        let idx =
            self.core
                .submit_internal(self.worker, pool, method, input, local, self.yielder)?;
        self.subtasks.push(idx);
        Ok(Subtask::new(idx))
    }

    fn wait(&self, sub: &Subtask) -> Result<Vec<u8>, TaskError> {
        // Only this task's own subtasks hold a reference that keeps their
        // record from being reused while it is read.
        if !self.subtasks.contains(&sub.id()) {
            return Err(TaskError::Failed(format!(
                "subtask {} was not submitted by this task",
                sub.id()
            )));
        }
        let rec = self.core.view.records.get(sub.id());
        while rec.phase() != record::DONE {
            self.yielder.suspend(Suspend::Wait(sub.id()));
        }
        match rec.status() {
            status::OK => Ok(self.core.output_of(rec).to_vec()),
            status::TIMED_OUT => Err(TaskError::Failed("subtask timed out".into())),
            s => Err(TaskError::Failed(format!(
                "subtask failed (status {s}): {}",
                String::from_utf8_lossy(self.core.output_of(rec))
            ))),
        }
    }
}

impl Drop for EngineTask<'_> {
    fn drop(&mut self) {
        for idx in self.subtasks.drain(..) {
            self.core.release(idx, record::REF_CLIENT);
        }
    }
}
