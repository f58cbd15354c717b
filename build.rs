//! Link the rgunicorn binary and tests against the libpython they were built
//! for: without an rpath the loader picks Debian's `libpython3.11.so.1.0`
//! (same soname, different prefix) over pyenv's.
fn main() {
    pyo3_build_config::add_libpython_rpath_link_args();
}
