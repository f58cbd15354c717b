//! Unit tests of this crate embed CPython: give them the rpath of the
//! libpython they were built against (see the top-level build.rs).
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
