//! gunicorn's validators, one function per [`Validator`], on Python objects:
//! values from the config file are whatever Python object the file bound;
//! values from the command line arrive as argparse would pass them (str,
//! int, bool, list of str). Each returns the coerced Python object that the
//! setting then holds, or the message gunicorn prints after `Error: `.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBool, PyDict, PyInt, PyList, PyString, PyTuple};

use crate::table::Validator;

/// A value a validator refused: gunicorn's message for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

type VResult<'py> = Result<Bound<'py, PyAny>, Invalid>;

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// A Python exception raised while validating, as gunicorn shows it: its
/// `str()` (argparse and `cfg.set` print `str(e)`).
fn from_pyerr(py: Python<'_>, err: PyErr) -> Invalid {
    Invalid(
        err.value(py)
            .str()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    )
}

/// `str(val)`, as gunicorn interpolates values into its messages.
pub fn py_str(val: &Bound<'_, PyAny>) -> String {
    val.str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "<unprintable>".into())
}

/// `repr(val)`, for the `%r` in gunicorn's messages.
fn py_repr(val: &Bound<'_, PyAny>) -> String {
    val.repr()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "<unprintable>".into())
}

pub fn validate<'py>(
    py: Python<'py>,
    validator: Validator,
    val: &Bound<'py, PyAny>,
) -> VResult<'py> {
    use Validator::*;
    match validator {
        Str => string(py, val),
        ListStr => list_string(py, val),
        PosInt => pos_int(py, val),
        Bool => boolean(py, val),
        Dict => dict(val),
        Class => class(py, val),
        Callable(arity) => callable(py, val, Some(arity)),
        PostRequest => post_request(py, val),
        User => user_or_group(py, val, true),
        Group => user_or_group(py, val, false),
        Chdir => chdir(py, val),
        StatsdAddress => statsd_address(py, val),
        ReloadEngine => reload_engine(py, val),
        FilesOrPatterns => files_or_patterns(py, val),
        AddrList => addr_list(py, val),
        CommaList => string_to_list(py, val),
        SslVersion => ssl_version(py, val),
        ProxyProtocol => proxy_protocol(py, val),
        HttpProtocols => http_protocols(py, val),
        Http2Cleartext => http2_cleartext(py, val),
        Http2StreamLimit => {
            let v = pos_int(py, val)?;
            if v.lt(1).unwrap_or(true) {
                return Err(invalid(format!(
                    "HTTP/2 max concurrent streams must be at least 1: {}",
                    py_str(&v)
                )));
            }
            Ok(v)
        }
        Http2WindowSize => {
            let v = pos_int(py, val)?;
            if v.gt(2_147_483_647i64).unwrap_or(true) {
                return Err(invalid(format!(
                    "HTTP/2 window size must be at most 2147483647: {}",
                    py_str(&v)
                )));
            }
            Ok(v)
        }
        Http2FrameSize => {
            let v = to_int(py, val)?;
            let n = v.extract::<i64>().unwrap_or(-1);
            if !(16384..=16777215).contains(&n) {
                return Err(invalid(format!(
                    "http2_max_frame_size must be between 16384 and 16777215, got {}",
                    py_str(&v)
                )));
            }
            Ok(v)
        }
        HeaderMap => choice(
            py,
            val,
            "Invalid header map behaviour",
            &["drop", "refuse", "dangerous"],
            None,
        ),
        AsgiLoop => choice(
            py,
            val,
            "Invalid ASGI loop",
            &["auto", "asyncio", "uvloop"],
            Some("auto"),
        ),
        AsgiLifespan => choice(
            py,
            val,
            "Invalid ASGI lifespan",
            &["auto", "on", "off"],
            Some("auto"),
        ),
        HttpParser => http_parser(py, val),
    }
}

fn is_str(val: &Bound<'_, PyAny>) -> bool {
    val.is_instance_of::<PyString>()
}

/// `validate_string`: None stays None, a str is stripped, anything else is refused.
pub fn string<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    if val.is_none() {
        return Ok(val.clone());
    }
    if !is_str(val) {
        return Err(invalid(format!("Not a string: {}", py_str(val))));
    }
    val.call_method0("strip").map_err(|e| from_pyerr(py, e))
}

/// `validate_list_string`: falsy -> `[]`, a str -> `[str]`, else each item a string.
fn list_string<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    if !val.is_truthy().map_err(|e| from_pyerr(py, e))? {
        return Ok(PyList::empty(py).into_any());
    }
    let items: Vec<Bound<'py, PyAny>> = if is_str(val) {
        vec![val.clone()]
    } else {
        val.try_iter()
            .map_err(|e| from_pyerr(py, e))?
            .collect::<PyResult<_>>()
            .map_err(|e| from_pyerr(py, e))?
    };
    let out = PyList::empty(py);
    for item in items {
        out.append(string(py, &item)?)
            .map_err(|e| from_pyerr(py, e))?;
    }
    Ok(out.into_any())
}

/// `int(val)` for ints and bools, `int(val, 0)` otherwise (so `"0x10"` is 16
/// and `"many"` gives Python's own message).
fn to_int<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let int_type = py.get_type::<PyInt>();
    let res = if val.is_instance_of::<PyInt>() {
        int_type.call1((val,))
    } else {
        int_type.call1((val, 0))
    };
    res.map_err(|e| from_pyerr(py, e))
}

/// `validate_pos_int`.
fn pos_int<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let v = to_int(py, val)?;
    if v.lt(0).unwrap_or(false) {
        return Err(invalid(format!("Value must be positive: {}", py_str(&v))));
    }
    Ok(v)
}

/// `validate_bool`: bools, and the strings "true"/"false" in any case.
fn boolean<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    if val.is_none() || val.is_instance_of::<PyBool>() {
        return Ok(val.clone());
    }
    if !is_str(val) {
        return Err(invalid(format!(
            "Invalid type for casting: {}",
            py_str(val)
        )));
    }
    match lower_strip(val).as_str() {
        "true" => Ok(PyBool::new(py, true).to_owned().into_any()),
        "false" => Ok(PyBool::new(py, false).to_owned().into_any()),
        _ => Err(invalid(format!("Invalid boolean: {}", py_str(val)))),
    }
}

/// `val.lower().strip()` with Python's own notion of case and whitespace.
fn lower_strip(val: &Bound<'_, PyAny>) -> String {
    val.call_method0("lower")
        .and_then(|v| v.call_method0("strip"))
        .map(|v| py_str(&v))
        .unwrap_or_default()
}

fn dict<'py>(val: &Bound<'py, PyAny>) -> VResult<'py> {
    if !val.is_instance_of::<PyDict>() {
        return Err(invalid(format!(
            "Value is not a dictionary: {} ",
            py_str(val)
        )));
    }
    Ok(val.clone())
}

fn inspect<'py>(py: Python<'py>) -> Result<Bound<'py, PyModule>, Invalid> {
    py.import("inspect").map_err(|e| from_pyerr(py, e))
}

fn inspect_is(py: Python<'_>, what: &str, val: &Bound<'_, PyAny>) -> Result<bool, Invalid> {
    inspect(py)?
        .call_method1(what, (val,))
        .and_then(|r| r.is_truthy())
        .map_err(|e| from_pyerr(py, e))
}

/// `validate_class`: a function or method is called for the class; a class
/// is kept; anything else must be a string (a dotted path or a short name).
fn class<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let mut val = val.clone();
    if inspect_is(py, "isfunction", &val)? || inspect_is(py, "ismethod", &val)? {
        val = val.call0().map_err(|e| from_pyerr(py, e))?;
    }
    if inspect_is(py, "isclass", &val)? {
        return Ok(val);
    }
    string(py, &val)
}

/// gunicorn's `util.get_arity`: the number of positional parameters
/// (`*args` and keyword-only parameters do not count).
pub fn arity(py: Python<'_>, func: &Bound<'_, PyAny>) -> Result<usize, Invalid> {
    let inspect = inspect(py)?;
    let sig = inspect
        .call_method1("signature", (func,))
        .map_err(|e| from_pyerr(py, e))?;
    let param = inspect
        .getattr("Parameter")
        .map_err(|e| from_pyerr(py, e))?;
    let positional = [
        param
            .getattr("POSITIONAL_ONLY")
            .map_err(|e| from_pyerr(py, e))?,
        param
            .getattr("POSITIONAL_OR_KEYWORD")
            .map_err(|e| from_pyerr(py, e))?,
    ];
    let params = sig
        .getattr("parameters")
        .and_then(|p| p.call_method0("values"))
        .map_err(|e| from_pyerr(py, e))?;
    let mut n = 0;
    for p in params.try_iter().map_err(|e| from_pyerr(py, e))? {
        let kind = p
            .and_then(|p| p.getattr("kind"))
            .map_err(|e| from_pyerr(py, e))?;
        if positional.iter().any(|k| kind.eq(k).unwrap_or(false)) {
            n += 1;
        }
    }
    Ok(n)
}

/// `validate_callable(arity)`: a callable, or a `module.attr` import string,
/// with exactly `arity` positional parameters (`None`: any).
fn callable<'py>(py: Python<'py>, val: &Bound<'py, PyAny>, want: Option<usize>) -> VResult<'py> {
    let mut val = val.clone();
    if is_str(&val) {
        let s = py_str(&val);
        let Some((module, attr)) = s.rsplit_once('.') else {
            return Err(invalid(format!(
                "Value '{s}' is not import string. Format: module[.submodules...].object"
            )));
        };
        let module = py.import(module).map_err(|e| from_pyerr(py, e))?;
        val = module.getattr(attr).map_err(|_| {
            invalid(format!(
                "Can not load '{attr}' from '{}'",
                s.rsplit_once('.').unwrap().0
            ))
        })?;
    }
    if !val.is_callable() {
        return Err(invalid(format!("Value is not callable: {}", py_str(&val))));
    }
    if let Some(want) = want {
        if arity(py, &val)? != want {
            return Err(invalid(format!("Value must have an arity of: {want}")));
        }
    }
    Ok(val)
}

/// `validate_post_request`: 2, 3 or 4 positional parameters; the caller
/// passes only as many arguments as the hook takes.
fn post_request<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let val = callable(py, val, None)?;
    match arity(py, &val)? {
        2..=4 => Ok(val),
        _ => Err(invalid("Value must have an arity of: 4")),
    }
}

/// `validate_user` / `validate_group`: None is the effective id, ints and
/// digit strings are ids, other strings are looked up by name.
fn user_or_group<'py>(py: Python<'py>, val: &Bound<'py, PyAny>, user: bool) -> VResult<'py> {
    let id_obj = |id: u32| -> VResult<'py> {
        let Ok(obj) = id.into_pyobject(py);
        Ok(obj.into_any())
    };
    if val.is_none() {
        return id_obj(if user {
            nix::unistd::geteuid().as_raw()
        } else {
            nix::unistd::getegid().as_raw()
        });
    }
    if val.is_instance_of::<PyInt>() {
        return Ok(val.clone());
    }
    if !is_str(val) {
        let tname = val
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        return Err(invalid(format!(
            "'{tname}' object has no attribute 'isdigit'"
        )));
    }
    let s = py_str(val);
    if val
        .call_method0("isdigit")
        .and_then(|b| b.is_truthy())
        .unwrap_or(false)
    {
        return to_int(py, val);
    }
    let found = if user {
        nix::unistd::User::from_name(&s)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
    } else {
        nix::unistd::Group::from_name(&s)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    };
    match found {
        Some(id) => id_obj(id),
        None if user => Err(invalid(format!("No such user: '{s}'"))),
        None => Err(invalid(format!("No such group: '{s}'"))),
    }
}

/// `validate_chdir`: made absolute against the (PWD-aware) cwd, must exist.
fn chdir<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    // None goes on to os.path.join, whose TypeError is gunicorn's message.
    let v = string(py, val)?;
    let path = py
        .import("os.path")
        .and_then(|osp| {
            let joined = osp.call_method1("join", (crate::computed::getcwd(), &v))?;
            let normed = osp.call_method1("normpath", (joined,))?;
            osp.call_method1("abspath", (normed,))
        })
        .map_err(|e| from_pyerr(py, e))?;
    if !std::path::Path::new(&py_str(&path)).exists() {
        return Err(invalid(format!("can't chdir to {}", py_repr(&v))));
    }
    Ok(path)
}

/// gunicorn's `util.parse_address` for `HOST[:PORT]`, `[V6]:PORT`,
/// `unix:PATH`, `fd://N`, `tcp://...`. Shared with the socket code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String, u16),
    Unix(String),
    Fd(i32),
}

/// An address gunicorn's `parse_address` refuses, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressError(pub String);

impl From<String> for AddressError {
    fn from(message: String) -> Self {
        AddressError(message)
    }
}

impl From<&str> for AddressError {
    fn from(message: &str) -> Self {
        AddressError(message.to_string())
    }
}

pub fn parse_address(netloc: &str, default_port: &str) -> Result<Address, AddressError> {
    if let Some(rest) = netloc.strip_prefix("unix:") {
        // re.split(r'unix:(//)?', netloc)[-1]: the text after the last "unix:" / "unix://".
        let last = netloc.rsplit("unix:").next().unwrap_or(rest);
        return Ok(Address::Unix(
            last.strip_prefix("//").unwrap_or(last).to_string(),
        ));
    }
    if let Some(fd) = netloc.strip_prefix("fd://") {
        return fd
            .trim()
            .parse::<i32>()
            .map(Address::Fd)
            .map_err(|_| format!("'{fd}' is not a valid file descriptor.").into());
    }
    let netloc = match netloc.strip_prefix("tcp://") {
        Some(_) => netloc.split("tcp://").nth(1).unwrap_or(""),
        None => netloc,
    };
    let (host, port): (String, String) = if netloc.contains('[') && netloc.contains(']') {
        let host = netloc
            .split(']')
            .next()
            .unwrap_or("")
            .get(1..)
            .unwrap_or("");
        let port = netloc.split("]:").nth(1).unwrap_or(default_port);
        (host.into(), port.into())
    } else if netloc.contains(':') {
        let mut parts = netloc.split(':');
        let host = parts.next().unwrap_or("");
        let port = parts.next().unwrap_or(default_port);
        (host.into(), port.into())
    } else if netloc.is_empty() {
        ("0.0.0.0".into(), default_port.into())
    } else {
        (netloc.into(), default_port.into())
    };
    match port.trim().parse::<i64>() {
        Ok(p) if (0..=65535).contains(&p) => Ok(Address::Tcp(host.to_lowercase(), p as u16)),
        Ok(p) => Err(format!("port must be 0-65535: {p}").into()),
        Err(_) => Err(format!("'{port}' is not a valid port number.").into()),
    }
}

/// `validate_statsd_address`: `unix:NNNN` is kept as the legacy
/// `('unix', NNNN)` host tuple; otherwise a tuple `(host, port)` or a path.
fn statsd_address<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let v = string(py, val)?;
    if v.is_none() {
        return Ok(v);
    }
    let s = py_str(&v);
    let conv = |e: PyErr| from_pyerr(py, e);
    if let Some(digits) = s.strip_prefix("unix:") {
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            let n = to_int(py, &PyString::new(py, digits).into_any())?;
            return Ok(PyTuple::new(py, [PyString::new(py, "unix").into_any(), n])
                .map_err(conv)?
                .into_any());
        }
    }
    match parse_address(&s, "8125") {
        Ok(Address::Tcp(host, port)) => {
            Ok((host, port).into_pyobject(py).map_err(conv)?.into_any())
        }
        Ok(Address::Unix(path)) => Ok(PyString::new(py, &path).into_any()),
        Ok(Address::Fd(fd)) => {
            let Ok(obj) = fd.into_pyobject(py);
            Ok(obj.into_any())
        }
        Err(_) => Err(invalid("Value must be one of ('host:port', 'unix://PATH')")),
    }
}

fn reload_engine<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let ok = is_str(val) && matches!(py_str(val).as_str(), "auto" | "poll" | "inotify");
    if !ok {
        let _ = py;
        return Err(invalid(format!("Invalid reload_engine: {}", py_repr(val))));
    }
    Ok(val.clone())
}

/// `validate_list_of_files_or_patterns`: literal paths must exist; glob
/// patterns are kept unexpanded (a pattern matching nothing only warns).
fn files_or_patterns<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let list = list_string(py, val)?;
    for entry in list.try_iter().map_err(|e| from_pyerr(py, e))? {
        let entry = py_str(&entry.map_err(|e| from_pyerr(py, e))?);
        let is_glob = entry.contains(['*', '?', '[']);
        if is_glob {
            let matches = py
                .import("glob")
                .and_then(|g| {
                    g.call_method(
                        "glob",
                        (&entry,),
                        Some(&[("recursive", true)].into_py_dict(py)?),
                    )
                })
                .and_then(|m| m.len())
                .unwrap_or(0);
            if matches == 0 {
                eprintln!("RuntimeWarning: Pattern {entry} currently matches no files.");
            }
        } else if !std::path::Path::new(&entry).exists() {
            return Err(invalid(format!("File {entry} does not exists.")));
        }
    }
    Ok(list)
}

/// `validate_string_to_list`: a comma-separated string to a list of stripped items.
fn string_to_list<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let v = string(py, val)?;
    let out = PyList::empty(py);
    if v.is_none() || !v.is_truthy().unwrap_or(false) {
        return Ok(out.into_any());
    }
    for part in py_str(&v).split(',') {
        if !part.is_empty() {
            let item = PyString::new(py, part)
                .call_method0("strip")
                .map_err(|e| from_pyerr(py, e))?;
            out.append(item).map_err(|e| from_pyerr(py, e))?;
        }
    }
    Ok(out.into_any())
}

/// `validate_string_to_addr_list`: each item `*`, an IP or a network
/// (strict: host bits must be zero), checked by Python's `ipaddress`.
fn addr_list<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let list = string_to_list(py, val)?;
    let ipaddress = py.import("ipaddress").map_err(|e| from_pyerr(py, e))?;
    for addr in list.try_iter().map_err(|e| from_pyerr(py, e))? {
        let addr = addr.map_err(|e| from_pyerr(py, e))?;
        if py_str(&addr) != "*" {
            ipaddress
                .call_method1("ip_network", (addr,))
                .map_err(|e| from_pyerr(py, e))?;
        }
    }
    Ok(list)
}

/// `validate_ssl_version`: deprecated and ignored; any other value than
/// the default warns.
fn ssl_version<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let default = py
        .import("ssl")
        .and_then(|ssl| ssl.getattr("PROTOCOL_TLS"))
        .map_err(|e| from_pyerr(py, e))?;
    if !val.eq(&default).unwrap_or(false) {
        eprintln!("Warning: option `ssl_version` is deprecated and it is ignored. Use ssl_context instead.");
    }
    Ok(val.clone())
}

fn proxy_protocol<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let norm = if val.is_none() {
        "off"
    } else if val.is_instance_of::<PyBool>() {
        if val.is_truthy().unwrap_or(false) {
            "auto"
        } else {
            "off"
        }
    } else if !is_str(val) {
        return Err(invalid("proxy_protocol must be string or bool"));
    } else {
        match lower_strip(val).as_str() {
            "false" | "off" | "0" | "none" => "off",
            "true" | "auto" | "1" => "auto",
            "v1" => "v1",
            "v2" => "v2",
            _ => return Err(invalid("proxy_protocol must be: off, v1, v2, or auto")),
        }
    };
    Ok(PyString::new(py, norm).into_any())
}

fn http_protocols<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    let default = || {
        PyList::new(py, ["h1"])
            .map(|l| l.into_any())
            .map_err(|e| from_pyerr(py, e))
    };
    if val.is_none() {
        return default();
    }
    if !is_str(val) {
        return Err(invalid("http_protocols must be a string"));
    }
    let mut protocols: Vec<String> = Vec::new();
    for part in py_str(val).split(',') {
        let p = PyString::new(py, part)
            .call_method0("strip")
            .and_then(|p| p.call_method0("lower"))
            .map(|p| py_str(&p))
            .map_err(|e| from_pyerr(py, e))?;
        if !p.is_empty() {
            protocols.push(p);
        }
    }
    if protocols.is_empty() {
        return default();
    }
    for p in &protocols {
        if p != "h1" && p != "h2" {
            return Err(invalid(format!(
                "Invalid protocol '{p}'. Valid protocols: h1, h2"
            )));
        }
    }
    if protocols.len() == 2 && protocols[0] == protocols[1] || protocols.len() > 2 {
        return Err(invalid("Duplicate protocols specified"));
    }
    PyList::new(py, protocols)
        .map(|l| l.into_any())
        .map_err(|e| from_pyerr(py, e))
}

fn http2_cleartext<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    if val.is_none() {
        return Ok(PyString::new(py, "off").into_any());
    }
    if val.is_instance_of::<PyBool>() {
        let on = val.is_truthy().unwrap_or(false);
        return Ok(PyString::new(py, if on { "prior-knowledge" } else { "off" }).into_any());
    }
    choice(
        py,
        val,
        "Invalid http2_cleartext",
        &["off", "prior-knowledge", "upgrade", "both"],
        Some("off"),
    )
}

fn http_parser<'py>(py: Python<'py>, val: &Bound<'py, PyAny>) -> VResult<'py> {
    if !val.is_none() && !is_str(val) {
        return Err(invalid("http_parser must be a string"));
    }
    choice(
        py,
        val,
        "http_parser must be one of: auto, fast, python",
        &["auto", "fast", "python"],
        Some("auto"),
    )
    .map_err(|_| invalid("http_parser must be one of: auto, fast, python"))
}

/// The common shape of gunicorn's enum validators: `None` -> `none_is`
/// (or None when that is `None`), a non-string is a type error, the value
/// is lowercased and stripped and must be one of `allowed`.
fn choice<'py>(
    py: Python<'py>,
    val: &Bound<'py, PyAny>,
    what: &str,
    allowed: &[&str],
    none_is: Option<&str>,
) -> VResult<'py> {
    if val.is_none() {
        return Ok(match none_is {
            Some(v) => PyString::new(py, v).into_any(),
            None => val.clone(),
        });
    }
    if !is_str(val) {
        return Err(invalid(format!(
            "Invalid type for casting: {}",
            py_str(val)
        )));
    }
    let norm = lower_strip(val);
    if allowed.contains(&norm.as_str()) {
        Ok(PyString::new(py, &norm).into_any())
    } else {
        // gunicorn shows the normalised value for the loop/lifespan/h2c
        // validators and the raw one for header_map.
        let shown = if none_is.is_some() { norm } else { py_str(val) };
        Err(invalid(format!("{what}: {shown}")))
    }
}

/// Raise a Python `TypeError` with a validator's message (for callers that
/// run inside Python, like `cfg.set` on the `server.cfg` object).
pub fn to_pyerr(err: Invalid) -> PyErr {
    PyTypeError::new_err(err.0)
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
