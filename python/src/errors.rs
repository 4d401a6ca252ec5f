//! The client's errors as the exceptions of `chimaera.errors` (Python
//! classes, so that they can have several bases, e.g. `TimedOut` is also a
//! `TimeoutError`), with the details Python code tests as attributes.

use chimaera_client::ClientError;
use chimaera_proto::record::status;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An instance of `chimaera.errors.<class>` with `message`, as a `PyErr`.
/// Anything failing on the way (the module cannot be imported) is raised
/// in its place: a user still sees why.
pub(crate) fn raise(
    py: Python<'_>,
    class: &str,
    message: String,
    attrs: &[(&str, Py<PyAny>)],
) -> PyErr {
    let build = || -> PyResult<PyErr> {
        let module =
            ERRORS.get_or_try_init(py, || py.import("chimaera.errors").map(Bound::unbind))?;
        let instance = module.bind(py).getattr(class)?.call1((message,))?;
        for (name, value) in attrs {
            instance.setattr(*name, value)?;
        }
        Ok(PyErr::from_value(instance))
    };
    build().unwrap_or_else(|e| e)
}

/// The exception of a client error.
pub(crate) fn to_py(py: Python<'_>, e: ClientError) -> PyErr {
    let text = e.to_string();
    let int = |v: i64| v.into_pyobject(py).expect("an int").into_any().unbind();
    match e {
        ClientError::NotRunning(_) => raise(py, "NotRunning", text, &[]),
        ClientError::VersionMismatch { .. } => raise(py, "VersionMismatch", text, &[]),
        ClientError::QueueFull => raise(py, "QueueFull", text, &[]),
        ClientError::TimedOut => raise(py, "TimedOut", text, &[]),
        ClientError::RuntimeGone(pid) => {
            raise(py, "RuntimeGone", text, &[("pid", int(i64::from(pid)))])
        }
        ClientError::Stopping => raise(py, "Stopping", text, &[]),
        ClientError::NoSuchPool(pool) => {
            raise(py, "NoSuchPool", text, &[("pool", int(i64::from(pool)))])
        }
        ClientError::NodeUnavailable(_) => raise(py, "NodeUnavailable", text, &[]),
        ClientError::Module {
            status: code,
            message,
        } => {
            let class = match code {
                status::NO_SUCH_METHOD => "NoSuchMethod",
                status::BAD_INPUT => "BadInput",
                _ => "ModuleError",
            };
            let message = message
                .into_pyobject(py)
                .expect("a str")
                .into_any()
                .unbind();
            raise(
                py,
                class,
                text,
                &[("status", int(i64::from(code))), ("message", message)],
            )
        }
        ClientError::PermissionDenied(_) => raise(py, "PermissionDenied", text, &[]),
        ClientError::TooManyClients(_) => raise(py, "TooManyClients", text, &[]),
        ClientError::Config(_) => raise(py, "ConfigError", text, &[]),
        ClientError::Other(_) => raise(py, "ChimaeraError", text, &[]),
    }
}

/// `TimedOut` for a caller's own limit, which leaves the task running.
pub(crate) fn caller_timed_out(py: Python<'_>, limit: f64) -> PyErr {
    raise(
        py,
        "TimedOut",
        format!("no reply within the timeout of {limit} s; the task still runs in the runtime"),
        &[],
    )
}
