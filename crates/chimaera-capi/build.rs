//! The shared library's soname: programs linked against libchimaera.so
//! record libchimaera.so.0, the name the runtime package (libchimaera0)
//! ships, so an ABI break is a new soname, not a crash.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libchimaera.so.0");
    println!("cargo:rerun-if-changed=build.rs");
}
