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
    /// The input as checked when the task started (`RuntimeCore::input_span`).
    pub(super) input: (*const u8, usize),
    /// The input, copied out on first use.
    pub(super) input_copy: std::cell::OnceCell<Vec<u8>>,
    /// An output being filled ([`TaskHost::output_buffer`]), written to the
    /// record when the task returns `Ok`.
    pub(super) out_buf: Option<Vec<u8>>,
}

impl EngineTask<'_> {
    /// Writes an output filled through `output_buffer` where the client
    /// reads it.
    pub(super) fn flush_output(&mut self) -> Result<(), TaskError> {
        match self.out_buf.take() {
            Some(buf) => self.core.set_output(self.rec, &buf),
            None => Ok(()),
        }
    }
}

impl TaskHost for EngineTask<'_> {
    fn input(&self) -> &[u8] {
        self.input_copy.get_or_init(|| {
            let (p, len) = self.input;
            // SAFETY: p..p+len was checked to lie in the record or a mapped
            // data segment when the task started.
            unsafe { chimaera_proto::shared::copy_out(p, len) }
        })
    }

    fn input_len(&self) -> usize {
        self.input.1
    }

    fn read_input(&self, at: usize, dst: &mut [u8]) -> usize {
        let (p, len) = self.input;
        let n = dst.len().min(len.saturating_sub(at));
        // SAFETY: at + n <= len, inside the span checked at the start.
        unsafe { std::ptr::copy_nonoverlapping(p.add(at.min(len)), dst.as_mut_ptr(), n) };
        n
    }

    fn set_output(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        self.out_buf = None;
        self.core.set_output(self.rec, bytes)
    }

    fn output_buffer(&mut self, len: usize) -> Result<&mut [u8], TaskError> {
        check_payload_len(len, "output").map_err(TaskError::Failed)?;
        Ok(self.out_buf.insert(vec![0u8; len]))
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
        let out = self.core.output_copy(rec).map_err(TaskError::Failed)?;
        match rec.status() {
            status::OK => Ok(out),
            status::TIMED_OUT => Err(TaskError::Failed("subtask timed out".into())),
            s => Err(TaskError::Failed(format!(
                "subtask failed (status {s}): {}",
                String::from_utf8_lossy(&out)
            ))),
        }
    }
    fn log(&self, level: u32, msg: &str) {
        let pool = self.rec.pool_id.load(Ordering::Relaxed);
        let method = self.rec.method.load(Ordering::Relaxed);
        let module = self.core.pools.module_of(pool).unwrap_or_default();
        let log = &self.core.log;
        use chimaera_module::abi::level;
        match level {
            level::ERROR => {
                slog::error!(log, "{}", msg; "module" => module, "pool" => pool, "method" => method)
            }
            level::WARNING => {
                slog::warn!(log, "{}", msg; "module" => module, "pool" => pool, "method" => method)
            }
            level::INFO => {
                slog::info!(log, "{}", msg; "module" => module, "pool" => pool, "method" => method)
            }
            level::DEBUG => {
                slog::debug!(log, "{}", msg; "module" => module, "pool" => pool, "method" => method)
            }
            _ => {
                slog::trace!(log, "{}", msg; "module" => module, "pool" => pool, "method" => method)
            }
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
