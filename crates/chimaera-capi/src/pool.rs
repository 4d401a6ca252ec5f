//! Pools through the C ABI: create, destroy, list, and the strings those
//! return, which the caller frees through the library.

use std::ffi::{CString, c_char};

use chimaera_proto::admin::{PoolInfo, PoolRef};

use crate::error::{Outcome, boundary, boundary_or};
use crate::{chimaera_client, chimaera_status, client_ref, put, text};

/// A pool as the runtime describes it. `name` and `module` are
/// NUL-terminated strings the library allocated: free them with
/// `chimaera_pool_free` (or `chimaera_pool_list_free` for a list).
#[repr(C)]
pub struct chimaera_pool {
    pub id: u32,
    pub name: *mut c_char,
    pub module: *mut c_char,
}

const EMPTY: chimaera_pool = chimaera_pool {
    id: 0,
    name: std::ptr::null_mut(),
    module: std::ptr::null_mut(),
};

/// A runtime's text as a C string: a NUL in it (it comes through shared
/// memory) is shown as \0 rather than cutting it short.
fn c_string(s: &str) -> *mut c_char {
    CString::new(s.replace('\0', "\\0"))
        .unwrap_or_default()
        .into_raw()
}

fn pool_of(info: &PoolInfo) -> chimaera_pool {
    chimaera_pool {
        id: info.id,
        name: c_string(&info.name),
        module: c_string(&info.module),
    }
}

/// Frees what `pool_of` allocated and empties the pool.
fn free_pool(p: &mut chimaera_pool) {
    for s in [&mut p.name, &mut p.module] {
        if !s.is_null() {
            // SAFETY: from CString::into_raw in c_string, freed once (nulled below).
            drop(unsafe { CString::from_raw(*s) });
        }
        *s = std::ptr::null_mut();
    }
}

/// Writes `info` to `out` unless the caller passed NULL (not interested).
///
/// # Safety
/// `out` is NULL or valid for a write of a `chimaera_pool`.
unsafe fn put_pool(out: *mut chimaera_pool, info: &PoolInfo) -> Outcome {
    if !out.is_null() {
        // SAFETY: non-null, writable by the caller's contract.
        unsafe { out.write(pool_of(info)) };
    }
    Ok(())
}

/// Creates a pool of `module` named `name` with `params` (JSON; NULL or ""
/// is none), or finds the one of that name, module and params.
/// `*out` (unless NULL) is the pool, to free with `chimaera_pool_free`.
///
/// # Safety
/// `client` is a live client; `name` and `module` are NUL-terminated
/// strings, `params` one or NULL; `out` is NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_create(
    client: *const chimaera_client,
    name: *const c_char,
    module: *const c_char,
    params: *const c_char,
    out: *mut chimaera_pool,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            if !out.is_null() {
                out.write(EMPTY);
            }
            let c = client_ref(client)?;
            let name = text(name, "name")?;
            let module = text(module, "module")?;
            let params = if params.is_null() {
                ""
            } else {
                text(params, "params")?
            };
            let info = c.create_pool(name, module, params)?;
            put_pool(out, &info)
        }
    })
}

/// Destroys the pool named `name`; `*out` (unless NULL) is what it was.
///
/// # Safety
/// `client` is a live client; `name` a NUL-terminated string; `out` NULL
/// or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_destroy(
    client: *const chimaera_client,
    name: *const c_char,
    out: *mut chimaera_pool,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            if !out.is_null() {
                out.write(EMPTY);
            }
            let c = client_ref(client)?;
            let name = text(name, "name")?;
            let info = c.destroy_pool(name)?;
            put_pool(out, &info)
        }
    })
}

/// Destroys the pool with id `id`; `*out` (unless NULL) is what it was.
///
/// # Safety
/// `client` is a live client; `out` NULL or valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_destroy_id(
    client: *const chimaera_client,
    id: u32,
    out: *mut chimaera_pool,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            if !out.is_null() {
                out.write(EMPTY);
            }
            let c = client_ref(client)?;
            let info = c.destroy_pool_ref(&PoolRef::Id { id })?;
            put_pool(out, &info)
        }
    })
}

/// Lists the runtime's pools (the admin pool first): `*pools` is an array
/// of `*count` pools, to free with `chimaera_pool_list_free`.
///
/// # Safety
/// `client` is a live client; `pools` and `count` valid for a write.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_list(
    client: *const chimaera_client,
    pools: *mut *mut chimaera_pool,
    count: *mut usize,
) -> chimaera_status {
    boundary(|| {
        // SAFETY: the caller's contract, for each pointer.
        unsafe {
            put(pools, std::ptr::null_mut(), "pools")?;
            put(count, 0, "count")?;
            let c = client_ref(client)?;
            let list: Box<[chimaera_pool]> = c.list_pools()?.iter().map(pool_of).collect();
            let n = list.len();
            pools.write(Box::into_raw(list).cast::<chimaera_pool>());
            count.write(n);
        }
        Ok(())
    })
}

/// Frees a pool's strings and empties it. NULL is ignored.
///
/// # Safety
/// `pool` is NULL or a pool the library filled and the caller did not change.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_free(pool: *mut chimaera_pool) {
    boundary_or((), || {
        // SAFETY: NULL or a valid pool by the caller's contract.
        if let Some(p) = unsafe { pool.as_mut() } {
            free_pool(p);
        }
    })
}

/// Frees a list from `chimaera_pool_list`. NULL is ignored.
///
/// # Safety
/// `pools` and `count` are exactly what `chimaera_pool_list` returned,
/// not freed before.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn chimaera_pool_list_free(pools: *mut chimaera_pool, count: usize) {
    boundary_or((), || {
        if pools.is_null() {
            return;
        }
        let list = std::ptr::slice_from_raw_parts_mut(pools, count);
        // SAFETY: a Box<[chimaera_pool]> of `count` from chimaera_pool_list,
        // freed once by the caller's contract.
        let mut list = unsafe { Box::from_raw(list) };
        list.iter_mut().for_each(free_pool);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_strings_are_freed_once_and_nul_is_shown() {
        let info = PoolInfo {
            id: 3,
            name: "kv".into(),
            module: "bad\0mod".into(),
        };
        let mut p = pool_of(&info);
        // SAFETY: just allocated by pool_of.
        let module = unsafe { std::ffi::CStr::from_ptr(p.module) };
        assert_eq!(module.to_str().unwrap(), "bad\\0mod");
        // SAFETY: a pool the library filled; the second free does nothing.
        unsafe {
            chimaera_pool_free(&mut p);
            chimaera_pool_free(&mut p);
        }
        assert!(p.name.is_null() && p.module.is_null());
    }
}
