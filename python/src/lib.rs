//! `chimaera._chimaera`, the native half of the `chimaera` Python package:
//! the Rust client (`chimaera-client`) behind `Client`, `Task`, `Pool` and
//! `wait_all`. The package's Python half (python/chimaera) adds the
//! exceptions, the admin method numbers, the command line and the bench.
//!
//! Speed is the point of this module, so: a submit that finds room runs
//! with the GIL held (it does not block), and only waiting releases it; a
//! task's input is read in place from its `bytes` object and its output
//! copied once, from shared memory into a new `bytes` object.

use std::path::PathBuf;
use std::time::Instant;

use chimaera_client::{Client, ClientError, LoadOptions, Task, TaskHandle};
use chimaera_proto::admin::{self, PoolInfo};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyString};

mod errors;
mod task;

use errors::to_py;
use task::{PyTask, PyTaskBatch, Slot, limit, wait_sliced};

/// A task's input: a `bytes` object read in place, or a copy of another
/// bytes-like object (a `bytearray` may change under us; a `memoryview`
/// is copied through `memoryview`, since abi3 for 3.9 has no buffer protocol).
enum Input<'py> {
    Borrowed(Bound<'py, PyBytes>),
    Owned(Vec<u8>),
}

impl<'py> Input<'py> {
    fn from_py(data: Option<&Bound<'py, PyAny>>) -> PyResult<Input<'py>> {
        let Some(data) = data else {
            return Ok(Input::Owned(Vec::new()));
        };
        if let Ok(b) = data.cast::<PyBytes>() {
            return Ok(Input::Borrowed(b.clone()));
        }
        if let Ok(b) = data.cast::<PyByteArray>() {
            return Ok(Input::Owned(b.to_vec()));
        }
        if data.is_instance_of::<PyString>() {
            return Err(PyTypeError::new_err(
                "a task's data is bytes, not str: encode it first (e.g. s.encode())",
            ));
        }
        // Through memoryview: it takes buffers only, where bytes() would
        // also turn an int into that many zeros.
        let py = data.py();
        let bytes = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((data,))
            .and_then(|view| view.call_method0("tobytes"))
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "a task's data is bytes-like (bytes, bytearray, memoryview), not {}",
                    data.get_type()
                        .name()
                        .map_or_else(|_| "that".to_string(), |n| n.to_string())
                ))
            })?;
        Ok(Input::Borrowed(bytes.cast_into::<PyBytes>()?))
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Input::Borrowed(b) => b.as_bytes(),
            Input::Owned(v) => v,
        }
    }
}

/// A pool of the runtime: its id, name and module. Usable wherever a pool
/// id is (`client.call(pool, ...)`), as it converts to its id.
#[pyclass(frozen, eq, hash, module = "chimaera", name = "Pool")]
#[derive(PartialEq, Eq, Hash)]
struct PyPool {
    #[pyo3(get)]
    id: u32,
    #[pyo3(get)]
    name: String,
    #[pyo3(get)]
    module: String,
}

impl From<PoolInfo> for PyPool {
    fn from(p: PoolInfo) -> PyPool {
        PyPool {
            id: p.id,
            name: p.name,
            module: p.module,
        }
    }
}

#[pymethods]
impl PyPool {
    fn __index__(&self) -> u32 {
        self.id
    }

    fn __repr__(&self) -> String {
        format!(
            "Pool(id={}, name={:?}, module={:?})",
            self.id, self.name, self.module
        )
    }
}

/// A connection to the chimaera runtime on this host, through its shared
/// memory. Thread-safe: share one client among threads.
///
/// `config` is the runtime's configuration file (str or path), read only
/// for what locates the runtime (segment names, `runtime.run_dir`); `None`
/// reads what the `chimaera` command would: `$CHI_SERVER_CONF`, else
/// /etc/chimaera/chimaera_config.yaml when present, else the defaults. The
/// `CHI_*` variables apply on top, as for the command.
///
/// Raises `NotRunning` when no runtime runs there, `ConfigError` for a
/// missing file, `PermissionDenied`, `VersionMismatch`, `TooManyClients`.
#[pyclass(frozen, module = "chimaera", name = "Client")]
struct PyClient {
    client: Client,
}

impl PyClient {
    /// Submits with the GIL held when there is room (the usual case: no
    /// wait), else releases it and waits for room (back-pressure).
    fn submit_handle<'c>(&'c self, py: Python<'_>, task: &Task<'_>) -> PyResult<TaskHandle<'c>> {
        match self.client.try_submit(task) {
            Ok(h) => Ok(h),
            Err(ClientError::QueueFull) => py
                .detach(|| self.client.submit(task))
                .map_err(|e| to_py(py, e)),
            Err(e) => Err(to_py(py, e)),
        }
    }

    /// Submits and waits: the handle of the done task, whose output is
    /// still in shared memory.
    fn run<'c>(
        &'c self,
        py: Python<'_>,
        task: &Task<'_>,
        timeout: Option<f64>,
    ) -> PyResult<TaskHandle<'c>> {
        let deadline = limit(timeout)?;
        let h = self.submit_handle(py, task)?;
        wait_sliced(py, deadline, |slice| h.wait_done(Some(slice)))?;
        Ok(h)
    }

    /// Runs an admin task; its output, or its error.
    fn admin(&self, py: Python<'_>, method: u32, input: &[u8]) -> PyResult<Vec<u8>> {
        let task = Task::new(admin::POOL_ID, method, input);
        self.run(py, &task, None)?
            .output_with(<[u8]>::to_vec)
            .map_err(|e| to_py(py, e))
    }

    fn admin_json<T: serde::de::DeserializeOwned>(
        &self,
        py: Python<'_>,
        method: u32,
        input: &[u8],
    ) -> PyResult<T> {
        let out = self.admin(py, method, input)?;
        serde_json::from_slice(&out).map_err(|e| {
            errors::raise(
                py,
                "ChimaeraError",
                format!("the runtime's reply is not what this client expects: {e}"),
                &[],
            )
        })
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (config = None))]
    fn new(py: Python<'_>, config: Option<PathBuf>) -> PyResult<PyClient> {
        let opts = match config {
            None => LoadOptions::default(),
            Some(path) => LoadOptions {
                config_path: Some(path),
                sets: Vec::new(),
                system_config: None,
            },
        };
        // Connecting may wait for a starting runtime's segments (up to 2 s).
        let client = py
            .detach(|| Client::connect_with(&opts))
            .map_err(|e| to_py(py, e))?;
        Ok(PyClient { client })
    }

    /// Runs an admin no-op and returns its round trip in seconds.
    #[pyo3(signature = (timeout = None))]
    fn ping(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<f64> {
        let t = Instant::now();
        let task = Task::new(admin::POOL_ID, admin::method::PING, &[]);
        let h = self.run(py, &task, timeout)?;
        let rtt = t.elapsed().as_secs_f64();
        h.output_with(|_| rtt).map_err(|e| to_py(py, e))
    }

    /// Runs method `method` of pool `pool` (an id, or a `Pool`) on `data`
    /// (bytes-like) and returns its output. Raises the task's error
    /// (`ModuleError`, `NoSuchPool`, ...), or `TimedOut` after `timeout`
    /// seconds (the task still runs). The GIL is released while waiting.
    #[pyo3(signature = (pool, method, data = None, timeout = None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        pool: u32,
        method: u32,
        data: Option<&Bound<'py, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let input = Input::from_py(data)?;
        let task = Task::new(pool, method, input.as_slice());
        self.run(py, &task, timeout)?
            .output_with(|b| PyBytes::new(py, b))
            .map_err(|e| to_py(py, e))
    }

    /// Submits a task and returns at once with its `Task` (wait for it
    /// with `Task.wait()` or `chimaera.wait_all`). Waits only while the
    /// runtime's lanes are full (back-pressure), without the GIL.
    #[pyo3(signature = (pool, method, data = None))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        pool: u32,
        method: u32,
        data: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<PyTask> {
        let input = Input::from_py(data)?;
        let task = Task::new(pool, method, input.as_slice());
        let h = self.submit_handle(py, &task)?;
        Ok(PyTask::new(h.into_owned(), pool, method))
    }

    /// Submits one task of method `method` of pool `pool` per item of
    /// `inputs` (an iterable of bytes-like objects) and returns them as a
    /// `TaskBatch`, a sequence of `Task`s in the order of `inputs`. When the
    /// runtime's lanes or task records run out midway, it waits for this
    /// batch's oldest tasks (keeping their outcomes), so a batch may be
    /// larger than the runtime's queues. Wait for them with
    /// `chimaera.wait_all`.
    fn submit_many<'py>(
        &self,
        py: Python<'py>,
        pool: u32,
        method: u32,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<PyTaskBatch> {
        let mut slots = Vec::with_capacity(inputs.len().unwrap_or(0));
        let mut oldest = 0;
        for item in inputs.try_iter()? {
            let item = item?;
            let input = Input::from_py(Some(&item))?;
            let task = Task::new(pool, method, input.as_slice());
            let h = loop {
                match self.client.try_submit(&task) {
                    Ok(h) => break h,
                    Err(ClientError::QueueFull) if oldest < slots.len() => {
                        // Our own tasks may hold the records we wait for.
                        let slot: &Slot = &slots[oldest];
                        slot.settle(py, None)?;
                        oldest += 1;
                    }
                    Err(ClientError::QueueFull) => {
                        break py
                            .detach(|| self.client.submit(&task))
                            .map_err(|e| to_py(py, e))?;
                    }
                    Err(e) => return Err(to_py(py, e)),
                }
            };
            slots.push(Slot::new(h.into_owned()));
        }
        Ok(PyTaskBatch::new(slots, pool, method))
    }

    /// Creates the pool `name` of module `module` (e.g. "bdev") with
    /// `params` (a JSON string, or anything `json.dumps` takes; None: no
    /// params), or returns the existing pool of that name, module and
    /// params. Another module or other params under that name raise
    /// `ModuleError`.
    #[pyo3(signature = (name, module, params = None))]
    fn create_pool(
        &self,
        py: Python<'_>,
        name: String,
        module: String,
        params: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyPool> {
        let params = match params {
            None => String::new(),
            Some(p) if p.is_none() => String::new(),
            Some(p) => match p.cast::<PyString>() {
                Ok(s) => s.to_string(),
                Err(_) => py
                    .import("json")?
                    .call_method1("dumps", (p,))?
                    .extract::<String>()?,
            },
        };
        admin::check_pool_name(&name).map_err(PyValueError::new_err)?;
        let req = admin::CreatePool {
            name,
            module,
            params,
        };
        let input = serde_json::to_vec(&req).expect("serializable");
        let info: PoolInfo = self.admin_json(py, admin::method::CREATE_POOL, &input)?;
        Ok(info.into())
    }

    /// Destroys a pool, named by name (str), id (int) or `Pool`; returns it.
    fn destroy_pool(&self, py: Python<'_>, pool: &Bound<'_, PyAny>) -> PyResult<PyPool> {
        let req = if let Ok(name) = pool.cast::<PyString>() {
            admin::PoolRef::Name {
                name: name.to_string(),
            }
        } else if let Ok(id) = pool.extract::<u32>() {
            admin::PoolRef::Id { id }
        } else {
            return Err(PyTypeError::new_err(
                "destroy_pool takes a pool's name (str), id (int) or Pool",
            ));
        };
        let input = serde_json::to_vec(&req).expect("serializable");
        let info: PoolInfo = self.admin_json(py, admin::method::DESTROY_POOL, &input)?;
        Ok(info.into())
    }

    /// The runtime's pools (the admin pool included), as `Pool`s.
    fn pools(&self, py: Python<'_>) -> PyResult<Vec<PyPool>> {
        let pools: Vec<PoolInfo> = self.admin_json(py, admin::method::LIST_POOLS, &[])?;
        Ok(pools.into_iter().map(PyPool::from).collect())
    }

    /// The runtime's counters (workers, lanes, records, clients, ...) as a
    /// dict, as `chimaera status --json` shows them.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = self.admin(py, admin::method::STATS, &[])?;
        let text = String::from_utf8_lossy(&out);
        py.import("json")?
            .call_method1("loads", (text.as_ref(),))?
            .cast_into::<PyDict>()
            .map_err(PyErr::from)
    }

    /// The runtime's process id.
    #[getter]
    fn runtime_pid(&self) -> u32 {
        self.client.discovery().pid
    }

    /// The number of the runtime's task lanes (one per worker).
    #[getter]
    fn lanes(&self) -> u32 {
        self.client.lanes()
    }

    fn __repr__(&self) -> String {
        format!(
            "<chimaera.Client runtime pid {}, {} lanes>",
            self.client.discovery().pid,
            self.client.lanes()
        )
    }
}

/// The admin pool's method numbers, by name (the `chimaera.AdminMethod`
/// enum is checked against these).
#[pyfunction]
fn admin_methods() -> Vec<(&'static str, u32)> {
    use admin::method::*;
    vec![
        ("PING", PING),
        ("STATS", STATS),
        ("STOP", STOP),
        ("FLUSH", FLUSH),
        ("CREATE_POOL", CREATE_POOL),
        ("DESTROY_POOL", DESTROY_POOL),
        ("LIST_POOLS", LIST_POOLS),
        ("ECHO", ECHO),
        ("SLEEP", SLEEP),
        ("SPIN", SPIN),
        ("FAN_OUT", FAN_OUT),
    ]
}

/// The native half of the chimaera client; import `chimaera`, not this.
#[pymodule]
fn _chimaera(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyClient>()?;
    m.add_class::<PyTask>()?;
    m.add_class::<PyTaskBatch>()?;
    m.add_class::<task::PyTaskBatchIter>()?;
    m.add_class::<PyPool>()?;
    m.add_function(wrap_pyfunction!(task::wait_all, m)?)?;
    m.add_function(wrap_pyfunction!(admin_methods, m)?)?;
    m.add("ADMIN_POOL", admin::POOL_ID)?;
    m.add("LAYOUT_VERSION", chimaera_proto::header::LAYOUT_VERSION)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
