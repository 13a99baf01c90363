//! The C ABI of `csrc/c10d_shim.cpp`, and the one place with `unsafe`.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, CStr, CString};
use tch::Tensor;
use torch_sys::C_tensor;

#[repr(C)]
pub struct RawGroup {
    _private: [u8; 0],
}
#[repr(C)]
pub struct RawStoreHost {
    _private: [u8; 0],
}
#[repr(C)]
pub struct RawReducer {
    _private: [u8; 0],
}

extern "C" {
    fn m6d_free_string(s: *mut c_char);
    fn m6d_group_new(
        master_addr: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        host_store: bool,
        timeout_ms: i64,
        prefix: *const c_char,
        bind: *const c_char,
        ifname: *const c_char,
        heartbeat_ms: i64,
        out: *mut *mut RawGroup,
    ) -> *mut c_char;
    fn m6d_group_free(g: *mut RawGroup);
    fn m6d_store_host_new(
        addr: *const c_char,
        port: c_int,
        timeout_ms: i64,
        out: *mut *mut RawStoreHost,
        bound: *mut c_int,
    ) -> *mut c_char;
    fn m6d_store_host_free(h: *mut RawStoreHost);
    fn m6d_heartbeats(g: *mut RawGroup, out: *mut i64) -> *mut c_char;
    fn m6d_publish_error(g: *mut RawGroup, message: *const c_char) -> *mut c_char;
    fn m6d_peer_error(g: *mut RawGroup, rank: c_int, message: *mut *mut c_char) -> *mut c_char;
    fn m6d_broadcast(g: *mut RawGroup, tensors: *const *mut C_tensor, n: usize, root: c_int) -> *mut c_char;
    fn m6d_all_reduce(g: *mut RawGroup, t: *mut C_tensor, op: c_int) -> *mut c_char;
    fn m6d_all_gather(g: *mut RawGroup, input: *mut C_tensor, outputs: *const *mut C_tensor) -> *mut c_char;
    fn m6d_barrier(g: *mut RawGroup) -> *mut c_char;
    fn m6d_reducer_new(
        g: *mut RawGroup,
        params: *const *mut C_tensor,
        names: *const *const c_char,
        n: usize,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        find_unused: bool,
        out: *mut *mut RawReducer,
    ) -> *mut c_char;
    fn m6d_reducer_free(r: *mut RawReducer);
    #[cfg(feature = "nccl")]
    fn m6d_group_add_nccl(g: *mut RawGroup, device: c_int) -> *mut c_char;
    fn m6d_reducer_prepare_forward(r: *mut RawReducer) -> *mut c_char;
    fn m6d_reducer_prepare_backward(r: *mut RawReducer, outputs: *const *mut C_tensor, n: usize) -> *mut c_char;
}

/// A C++ error message, or `Ok`.
fn check(err: *mut c_char) -> Result<(), String> {
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: non-null results are NUL-terminated strings malloc'd by the shim, freed exactly once here.
    let msg = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    unsafe { m6d_free_string(err) };
    Err(msg)
}

fn cstring(s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"))
}

fn handles(tensors: &[&Tensor]) -> Vec<*mut C_tensor> {
    // The shim only reads the handles (copying an at::Tensor shares its storage); in-place collectives write through
    // the storage, as tch's own in-place ops do from `&Tensor`.
    tensors.iter().map(|t| t.as_ptr() as *mut C_tensor).collect()
}

/// Owned `m6d_group*`.
pub struct Group(*mut RawGroup);

// SAFETY: the group is used from one thread at a time (`&mut`-free API, but `Group` is not `Sync`); its heartbeat
// thread owns its own store connection.
unsafe impl Send for Group {}

/// Arguments of [`Group::new`].
pub struct GroupArgs<'a> {
    pub master_addr: &'a str,
    pub port: u16,
    pub rank: usize,
    pub world: usize,
    pub host_store: bool,
    pub timeout_ms: i64,
    pub prefix: &'a str,
    pub bind: &'a str,
    pub ifname: &'a str,
    pub heartbeat_ms: i64,
}

impl Group {
    pub fn new(a: &GroupArgs<'_>) -> Result<Group, String> {
        let (addr, prefix, bind, ifname) =
            (cstring(a.master_addr)?, cstring(a.prefix)?, cstring(a.bind)?, cstring(a.ifname)?);
        let rank = c_int::try_from(a.rank).map_err(|_| format!("rank {} out of range", a.rank))?;
        let world = c_int::try_from(a.world).map_err(|_| format!("world size {} out of range", a.world))?;
        let mut out = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call; `out` receives an owned group on success.
        check(unsafe {
            m6d_group_new(
                addr.as_ptr(),
                c_int::from(a.port),
                rank,
                world,
                a.host_store,
                a.timeout_ms,
                prefix.as_ptr(),
                bind.as_ptr(),
                ifname.as_ptr(),
                a.heartbeat_ms,
                &mut out,
            )
        })?;
        Ok(Group(out))
    }

    #[cfg(feature = "nccl")]
    pub fn add_nccl(&self, device: usize) -> Result<(), String> {
        let d = c_int::try_from(device).map_err(|_| format!("CUDA device {device} out of range"))?;
        // SAFETY: valid group.
        check(unsafe { m6d_group_add_nccl(self.0, d) })
    }

    pub fn heartbeats(&self, world: usize) -> Result<Vec<i64>, String> {
        let mut out = vec![0i64; world];
        // SAFETY: `out` has one slot per rank of the group.
        check(unsafe { m6d_heartbeats(self.0, out.as_mut_ptr()) })?;
        Ok(out)
    }

    pub fn publish_error(&self, message: &str) -> Result<(), String> {
        let m = cstring(&message.replace('\0', " "))?;
        // SAFETY: valid group and string.
        check(unsafe { m6d_publish_error(self.0, m.as_ptr()) })
    }

    pub fn peer_error(&self, rank: usize) -> Result<String, String> {
        let r = c_int::try_from(rank).map_err(|_| format!("rank {rank} out of range"))?;
        let mut msg = std::ptr::null_mut();
        // SAFETY: on success `msg` is a malloc'd string we free below.
        check(unsafe { m6d_peer_error(self.0, r, &mut msg) })?;
        if msg.is_null() {
            return Ok(String::new());
        }
        let s = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
        unsafe { m6d_free_string(msg) };
        Ok(s)
    }

    pub fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<(), String> {
        let h = handles(tensors);
        let root = c_int::try_from(root).map_err(|_| format!("root {root} out of range"))?;
        // SAFETY: the handles outlive the call.
        check(unsafe { m6d_broadcast(self.0, h.as_ptr(), h.len(), root) })
    }

    pub fn all_reduce(&self, t: &Tensor, op: c_int) -> Result<(), String> {
        // SAFETY: the handle outlives the call.
        check(unsafe { m6d_all_reduce(self.0, t.as_ptr() as *mut C_tensor, op) })
    }

    pub fn all_gather(&self, input: &Tensor, outputs: &[&Tensor]) -> Result<(), String> {
        let h = handles(outputs);
        // SAFETY: one output handle per rank (checked by the caller); all outlive the call.
        check(unsafe { m6d_all_gather(self.0, input.as_ptr() as *mut C_tensor, h.as_ptr()) })
    }

    pub fn barrier(&self) -> Result<(), String> {
        // SAFETY: valid group.
        check(unsafe { m6d_barrier(self.0) })
    }

    pub fn reducer(
        &self,
        params: &[&Tensor],
        names: &[&str],
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        find_unused: bool,
    ) -> Result<Reducer, String> {
        let names: Vec<CString> = names.iter().map(|n| cstring(n)).collect::<Result<_, _>>()?;
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let h = handles(params);
        let mut out = std::ptr::null_mut();
        // SAFETY: `h` and `name_ptrs` have the same length and outlive the call.
        check(unsafe {
            m6d_reducer_new(
                self.0,
                h.as_ptr(),
                name_ptrs.as_ptr(),
                h.len(),
                bucket_bytes,
                first_bucket_bytes,
                find_unused,
                &mut out,
            )
        })?;
        Ok(Reducer(out))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { m6d_group_free(self.0) }
    }
}

/// Owned `m6d_store_host*`.
pub struct StoreHost(*mut RawStoreHost, u16);

// SAFETY: the store server runs on its own thread; the handle is only dropped.
unsafe impl Send for StoreHost {}

impl StoreHost {
    pub fn new(addr: &str, port: u16, timeout_ms: i64) -> Result<StoreHost, String> {
        let addr = cstring(addr)?;
        let (mut out, mut bound) = (std::ptr::null_mut(), 0 as c_int);
        // SAFETY: valid pointers for the call; `out` receives an owned host on success.
        check(unsafe { m6d_store_host_new(addr.as_ptr(), c_int::from(port), timeout_ms, &mut out, &mut bound) })?;
        let port = u16::try_from(bound).map_err(|_| format!("store bound to port {bound}"))?;
        Ok(StoreHost(out, port))
    }

    pub fn port(&self) -> u16 {
        self.1
    }
}

impl Drop for StoreHost {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { m6d_store_host_free(self.0) }
    }
}

/// Owned `m6d_reducer*` (keeps its own reference to the process group).
pub struct Reducer(*mut RawReducer);

// SAFETY: used from one thread at a time.
unsafe impl Send for Reducer {}

impl Reducer {
    pub fn prepare_forward(&self) -> Result<(), String> {
        // SAFETY: valid reducer.
        check(unsafe { m6d_reducer_prepare_forward(self.0) })
    }

    pub fn prepare_backward(&self, outputs: &[&Tensor]) -> Result<(), String> {
        let h = handles(outputs);
        // SAFETY: the handles outlive the call.
        check(unsafe { m6d_reducer_prepare_backward(self.0, h.as_ptr(), h.len()) })
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { m6d_reducer_free(self.0) }
    }
}
