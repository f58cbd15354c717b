//! Unit tests of the validators against gunicorn 27.0.1: the expected
//! results and messages below are what gunicorn's own `validate_*`
//! functions return or raise for the same Python inputs (`repr()` of the
//! returned object, `str()` of the raised exception).
//!
//! None of these tests depends on the process's working directory: the
//! config tests change it (under their own lock) while these run.

use std::ffi::CString;
use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::*;
use crate::table::Validator::{self, *};

/// Helpers the input expressions below refer to.
const PRELUDE: &str = r#"
import os, os.path, ssl

class K:
    pass

def make_k():
    return K

def zero():
    pass

def one(a):
    pass

def two(a, b):
    pass

def three(a, b, c):
    pass

def four(a, b, c, d):
    pass

def five(a, b, c, d, e):
    pass

def star(*args):
    pass

def defaulted(a, b=1):
    pass

def kw_only(a, *, k):
    pass

def kw_only_defaulted(a, b, *, k=1, **kw):
    pass

class WithMethod:
    def meth(self, a):
        return K

    def get(self):
        return K
"#;

fn with_py<R>(f: impl FnOnce(Python<'_>, &Bound<'_, PyDict>) -> R) -> R {
    Python::initialize();
    Python::attach(|py| {
        let ns = PyDict::new(py);
        py.run(&CString::new(PRELUDE).unwrap(), Some(&ns), None)
            .expect("prelude runs");
        f(py, &ns)
    })
}

fn eval<'py>(py: Python<'py>, ns: &Bound<'py, PyDict>, expr: &str) -> Bound<'py, PyAny> {
    py.eval(&CString::new(expr).unwrap(), Some(ns), None)
        .unwrap_or_else(|e| panic!("cannot evaluate {expr}: {e}"))
}

fn repr(val: &Bound<'_, PyAny>) -> String {
    val.repr().unwrap().to_string()
}

/// `validator(eval(input))` must succeed with a value whose `repr()` is `want`.
#[track_caller]
fn ok(py: Python<'_>, ns: &Bound<'_, PyDict>, v: Validator, input: &str, want: &str) {
    let val = eval(py, ns, input);
    match validate(py, v, &val) {
        Ok(out) => assert_eq!(repr(&out), want, "{v:?}({input})"),
        Err(e) => panic!("{v:?}({input}) refused: {e}"),
    }
}

/// `validator(eval(input))` must succeed and return the very same object.
#[track_caller]
fn same(py: Python<'_>, ns: &Bound<'_, PyDict>, v: Validator, input: &str) {
    let val = eval(py, ns, input);
    match validate(py, v, &val) {
        Ok(out) => assert!(out.is(&val), "{v:?}({input}) returned {}", repr(&out)),
        Err(e) => panic!("{v:?}({input}) refused: {e}"),
    }
}

/// `validator(eval(input))` must be refused with exactly `msg`.
#[track_caller]
fn err(py: Python<'_>, ns: &Bound<'_, PyDict>, v: Validator, input: &str, msg: &str) {
    let val = eval(py, ns, input);
    match validate(py, v, &val) {
        Ok(out) => panic!("{v:?}({input}) accepted as {}", repr(&out)),
        Err(Invalid(m)) => assert_eq!(m, msg, "{v:?}({input})"),
    }
}

/// A Python string literal for `s`, as `repr()` shows it (for the strings
/// used here: no quotes, no backslashes, no control characters).
fn lit(s: &str) -> String {
    assert!(!s.contains(['\'', '\\']) && !s.chars().any(char::is_control));
    format!("'{s}'")
}

/// A fresh directory under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("pyconf-validate-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir.canonicalize().unwrap())
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fails to compile when a variant is added to [`Validator`] without a test
/// here: each arm names the test that covers it.
#[allow(dead_code)]
fn every_validator_has_a_test(v: Validator) -> &'static str {
    match v {
        Str => "string_strips_and_refuses_non_strings",
        ListStr => "list_string",
        PosInt => "pos_int",
        Bool => "boolean",
        Dict => "dict",
        Class => "class",
        Callable(_) => "callable_arity",
        PostRequest => "post_request",
        User => "user",
        Group => "group",
        Chdir => "chdir",
        StatsdAddress => "statsd_address",
        ReloadEngine => "reload_engine",
        FilesOrPatterns => "files_or_patterns",
        AddrList => "addr_list",
        CommaList => "comma_list",
        SslVersion => "ssl_version",
        ProxyProtocol => "proxy_protocol",
        HttpProtocols => "http_protocols",
        Http2Cleartext => "http2_cleartext",
        Http2StreamLimit => "http2_stream_limit",
        Http2WindowSize => "http2_window_size",
        Http2FrameSize => "http2_frame_size",
        HeaderMap => "header_map",
        AsgiLoop => "asgi_loop",
        AsgiLifespan => "asgi_lifespan",
        HttpParser => "http_parser",
    }
}

#[test]
fn string_strips_and_refuses_non_strings() {
    with_py(|py, ns| {
        ok(py, ns, Str, "'  s  '", "'s'");
        ok(py, ns, Str, "''", "''");
        ok(py, ns, Str, "' \\t a b \\n'", "'a b'");
        ok(py, ns, Str, "None", "None");
        err(py, ns, Str, "5", "Not a string: 5");
        err(py, ns, Str, "['a']", "Not a string: ['a']");
        err(py, ns, Str, "True", "Not a string: True");
    });
}

#[test]
fn list_string() {
    with_py(|py, ns| {
        ok(py, ns, ListStr, "'a'", "['a']");
        ok(py, ns, ListStr, "' a '", "['a']");
        ok(py, ns, ListStr, "[]", "[]");
        ok(py, ns, ListStr, "''", "[]");
        ok(py, ns, ListStr, "None", "[]");
        ok(py, ns, ListStr, "('a', ' b ')", "['a', 'b']");
        ok(py, ns, ListStr, "['x', None]", "['x', None]");
        err(py, ns, ListStr, "[1]", "Not a string: 1");
        err(py, ns, ListStr, "['a', 2]", "Not a string: 2");
    });
}

#[test]
fn pos_int() {
    with_py(|py, ns| {
        ok(py, ns, PosInt, "'0x10'", "16");
        ok(py, ns, PosInt, "'0o17'", "15");
        ok(py, ns, PosInt, "' 12 '", "12");
        // Booleans are ints, and come out as plain ints.
        ok(py, ns, PosInt, "True", "1");
        ok(py, ns, PosInt, "0", "0");
        ok(py, ns, PosInt, "2**70", "1180591620717411303424");
        err(py, ns, PosInt, "-1", "Value must be positive: -1");
        err(py, ns, PosInt, "'-5'", "Value must be positive: -5");
        err(
            py,
            ns,
            PosInt,
            "'many'",
            "invalid literal for int() with base 0: 'many'",
        );
        // A leading 0 is not octal for the validator (only CLI auto_int).
        err(
            py,
            ns,
            PosInt,
            "'017'",
            "invalid literal for int() with base 0: '017'",
        );
        err(
            py,
            ns,
            PosInt,
            "1.5",
            "int() can't convert non-string with explicit base",
        );
        err(
            py,
            ns,
            PosInt,
            "None",
            "int() can't convert non-string with explicit base",
        );
    });
}

#[test]
fn pos_int_returns_a_python_int_not_a_bool() {
    with_py(|py, ns| {
        let out = validate(py, PosInt, &eval(py, ns, "True")).unwrap();
        assert!(out.get_type().is(py.get_type::<pyo3::types::PyInt>()));
    });
}

#[test]
fn boolean() {
    with_py(|py, ns| {
        ok(py, ns, Bool, "' TRUE '", "True");
        ok(py, ns, Bool, "'true'", "True");
        ok(py, ns, Bool, "'false'", "False");
        ok(py, ns, Bool, "'False'", "False");
        ok(py, ns, Bool, "True", "True");
        ok(py, ns, Bool, "False", "False");
        ok(py, ns, Bool, "None", "None");
        err(py, ns, Bool, "'maybe'", "Invalid boolean: maybe");
        err(py, ns, Bool, "'yes'", "Invalid boolean: yes");
        err(py, ns, Bool, "1", "Invalid type for casting: 1");
        err(py, ns, Bool, "[]", "Invalid type for casting: []");
    });
}

#[test]
fn dict() {
    with_py(|py, ns| {
        same(py, ns, Dict, "{'a': 1}");
        ok(py, ns, Dict, "{}", "{}");
        err(py, ns, Dict, "[]", "Value is not a dictionary: [] ");
        err(py, ns, Dict, "'x'", "Value is not a dictionary: x ");
        err(py, ns, Dict, "None", "Value is not a dictionary: None ");
    });
}

#[test]
fn class() {
    with_py(|py, ns| {
        ok(py, ns, Class, "' gevent '", "'gevent'");
        ok(
            py,
            ns,
            Class,
            "'gunicorn.workers.sync.SyncWorker'",
            "'gunicorn.workers.sync.SyncWorker'",
        );
        ok(py, ns, Class, "None", "None");
        same(py, ns, Class, "K");
        // A function (or bound method) is called for the class.
        let k = eval(py, ns, "K");
        for input in ["make_k", "WithMethod().get"] {
            let out = validate(py, Class, &eval(py, ns, input)).unwrap();
            assert!(out.is(&k), "{input} -> {}", repr(&out));
        }
        err(py, ns, Class, "5", "Not a string: 5");
        // A function returning something else than a class: that value is
        // validated as a string.
        ok(py, ns, Class, "zero", "None");
        err(py, ns, Class, "lambda: 5", "Not a string: 5");
    });
}

#[test]
fn callable_arity() {
    with_py(|py, ns| {
        same(py, ns, Callable(2), "two");
        same(py, ns, Callable(1), "one");
        same(py, ns, Callable(0), "zero");
        same(py, ns, Callable(1), "lambda a: a");
        // *args does not count.
        same(py, ns, Callable(0), "star");
        err(
            py,
            ns,
            Callable(1),
            "star",
            "Value must have an arity of: 1",
        );
        // A positional parameter with a default counts.
        same(py, ns, Callable(2), "defaulted");
        err(
            py,
            ns,
            Callable(1),
            "defaulted",
            "Value must have an arity of: 1",
        );
        // Keyword-only parameters and **kwargs do not count.
        same(py, ns, Callable(1), "kw_only");
        same(py, ns, Callable(2), "kw_only_defaulted");
        err(
            py,
            ns,
            Callable(2),
            "kw_only",
            "Value must have an arity of: 2",
        );
        // A bound method does not count self.
        let meth = validate(py, Callable(1), &eval(py, ns, "WithMethod().meth"));
        assert!(meth.is_ok(), "{meth:?}");
        err(
            py,
            ns,
            Callable(2),
            "WithMethod().meth",
            "Value must have an arity of: 2",
        );
        err(py, ns, Callable(3), "two", "Value must have an arity of: 3");
        err(
            py,
            ns,
            Callable(1),
            "five",
            "Value must have an arity of: 1",
        );

        // Import strings: os.path.join(a, *p) has one positional parameter.
        let join = eval(py, ns, "os.path.join");
        let out = validate(py, Callable(1), &eval(py, ns, "'os.path.join'")).unwrap();
        assert!(out.is(&join));
        err(
            py,
            ns,
            Callable(2),
            "'os.path.join'",
            "Value must have an arity of: 2",
        );
        err(
            py,
            ns,
            Callable(0),
            "'os.path.join'",
            "Value must have an arity of: 0",
        );
        err(
            py,
            ns,
            Callable(1),
            "'nodots'",
            "Value 'nodots' is not import string. Format: module[.submodules...].object",
        );
        err(
            py,
            ns,
            Callable(1),
            "'pyconf_no_such_module_xyz.f'",
            "No module named 'pyconf_no_such_module_xyz'",
        );
        err(
            py,
            ns,
            Callable(1),
            "'os.nosuchattr'",
            "Can not load 'nosuchattr' from 'os'",
        );
        err(py, ns, Callable(1), "'os.sep'", "Value is not callable: /");

        // Not callable at all.
        err(py, ns, Callable(1), "5", "Value is not callable: 5");
        err(py, ns, Callable(1), "None", "Value is not callable: None");
    });
}

#[test]
fn arity_counts_positional_parameters_only() {
    with_py(|py, ns| {
        for (input, want) in [
            ("zero", 0),
            ("one", 1),
            ("four", 4),
            ("star", 0),
            ("defaulted", 2),
            ("kw_only", 1),
            ("kw_only_defaulted", 2),
            ("lambda a, /, b, *c, d, **e: 0", 2),
            ("WithMethod().meth", 1),
            ("os.path.join", 1),
        ] {
            assert_eq!(arity(py, &eval(py, ns, input)).unwrap(), want, "{input}");
        }
    });
}

#[test]
fn post_request() {
    with_py(|py, ns| {
        // gunicorn wraps 2- and 3-parameter hooks in a 4-parameter lambda;
        // rgunicorn keeps the function (callers pass only as many
        // arguments as it takes, print_config shows the lambda's name).
        for (input, n) in [("two", 2), ("three", 3), ("four", 4)] {
            let val = eval(py, ns, input);
            let out = validate(py, PostRequest, &val)
                .unwrap_or_else(|e| panic!("post_request({input}) refused: {e}"));
            assert!(out.is(&val));
            assert_eq!(arity(py, &out).unwrap(), n);
        }
        same(py, ns, PostRequest, "defaulted");
        same(py, ns, PostRequest, "lambda w, r, e, resp, *a, k=1: 0");
        err(py, ns, PostRequest, "one", "Value must have an arity of: 4");
        err(
            py,
            ns,
            PostRequest,
            "five",
            "Value must have an arity of: 4",
        );
        err(
            py,
            ns,
            PostRequest,
            "zero",
            "Value must have an arity of: 4",
        );
        err(
            py,
            ns,
            PostRequest,
            "star",
            "Value must have an arity of: 4",
        );
        // Import string: os.path.join has one positional parameter.
        err(
            py,
            ns,
            PostRequest,
            "'os.path.join'",
            "Value must have an arity of: 4",
        );
        err(py, ns, PostRequest, "5", "Value is not callable: 5");
        err(
            py,
            ns,
            PostRequest,
            "'nodots'",
            "Value 'nodots' is not import string. Format: module[.submodules...].object",
        );
    });
}

#[test]
fn user() {
    with_py(|py, ns| {
        let euid = nix::unistd::geteuid().as_raw().to_string();
        ok(py, ns, User, "None", &euid);
        ok(py, ns, User, "1000", "1000");
        ok(py, ns, User, "'0'", "0");
        ok(py, ns, User, "'1234'", "1234");
        ok(py, ns, User, "'root'", "0");
        // bool is an int: kept as is.
        ok(py, ns, User, "True", "True");
        err(
            py,
            ns,
            User,
            "'pyconf-no-such-user'",
            "No such user: 'pyconf-no-such-user'",
        );
        err(
            py,
            ns,
            User,
            "1.5",
            "'float' object has no attribute 'isdigit'",
        );
    });
}

#[test]
fn group() {
    with_py(|py, ns| {
        let egid = nix::unistd::getegid().as_raw().to_string();
        ok(py, ns, Group, "None", &egid);
        ok(py, ns, Group, "1000", "1000");
        ok(py, ns, Group, "'0'", "0");
        ok(py, ns, Group, "'root'", "0");
        err(
            py,
            ns,
            Group,
            "'pyconf-no-such-group'",
            "No such group: 'pyconf-no-such-group'",
        );
        err(
            py,
            ns,
            Group,
            "[]",
            "'list' object has no attribute 'isdigit'",
        );
    });
}

#[test]
fn chdir() {
    let scratch = Scratch::new("chdir");
    std::fs::create_dir(scratch.path("sub")).unwrap();
    let sub = scratch.path("sub");
    // A relative path is joined to the cwd and normalised. The cwd is not
    // ours to fix (the config tests move it), so climb to / first: enough
    // `..` make the result independent of where the process is.
    let relative = format!("{}{}", "../".repeat(64), sub.trim_start_matches('/'));
    with_py(|py, ns| {
        ok(py, ns, Chdir, &lit(&relative), &lit(&sub));
        ok(py, ns, Chdir, &lit(&format!("  {relative} ")), &lit(&sub));
        ok(py, ns, Chdir, &lit(&format!("{sub}/../sub/.")), &lit(&sub));
        ok(py, ns, Chdir, &lit(&sub), &lit(&sub));
        ok(py, ns, Chdir, "'/'", "'/'");
        let missing = scratch.path("missing");
        err(
            py,
            ns,
            Chdir,
            &lit(&missing),
            &format!("can't chdir to '{missing}'"),
        );
        // A relative name that exists nowhere; the message shows it as given
        // (stripped), not made absolute.
        err(
            py,
            ns,
            Chdir,
            "' pyconf-no-such-dir-xyz '",
            "can't chdir to 'pyconf-no-such-dir-xyz'",
        );
        err(py, ns, Chdir, "5", "Not a string: 5");
        err(
            py,
            ns,
            Chdir,
            "None",
            "join() argument must be str, bytes, or os.PathLike object, not 'NoneType'",
        );
    });
}

#[test]
fn statsd_address() {
    with_py(|py, ns| {
        let v = StatsdAddress;
        ok(py, ns, v, "'localhost'", "('localhost', 8125)");
        ok(py, ns, v, "'LocalHost:9125'", "('localhost', 9125)");
        ok(py, ns, v, "' x:1 '", "('x', 1)");
        ok(py, ns, v, "'tcp://h:1'", "('h', 1)");
        ok(py, ns, v, "'[::1]:9000'", "('::1', 9000)");
        ok(py, ns, v, "'[::1]'", "('::1', 8125)");
        ok(py, ns, v, "''", "('0.0.0.0', 8125)");
        // The legacy unix:PORT form is a host named "unix".
        ok(py, ns, v, "'unix:8125'", "('unix', 8125)");
        ok(py, ns, v, "'unix:///tmp/s'", "'/tmp/s'");
        ok(py, ns, v, "'unix:/tmp/s'", "'/tmp/s'");
        ok(py, ns, v, "'unix://rel/s'", "'rel/s'");
        ok(py, ns, v, "'fd://3'", "3");
        ok(py, ns, v, "None", "None");
        err(
            py,
            ns,
            v,
            "'host:notaport'",
            "Value must be one of ('host:port', 'unix://PATH')",
        );
        err(
            py,
            ns,
            v,
            "'fd://x'",
            "Value must be one of ('host:port', 'unix://PATH')",
        );
        err(py, ns, v, "8125", "Not a string: 8125");
    });
}

#[test]
fn reload_engine() {
    with_py(|py, ns| {
        for e in ["auto", "poll", "inotify"] {
            ok(py, ns, ReloadEngine, &lit(e), &lit(e));
        }
        err(
            py,
            ns,
            ReloadEngine,
            "'bad'",
            "Invalid reload_engine: 'bad'",
        );
        err(
            py,
            ns,
            ReloadEngine,
            "' auto'",
            "Invalid reload_engine: ' auto'",
        );
        err(
            py,
            ns,
            ReloadEngine,
            "'AUTO'",
            "Invalid reload_engine: 'AUTO'",
        );
        err(py, ns, ReloadEngine, "None", "Invalid reload_engine: None");
    });
}

#[test]
fn files_or_patterns() {
    let scratch = Scratch::new("files");
    let file = scratch.path("existing.txt");
    std::fs::write(&file, "x").unwrap();
    std::fs::create_dir(scratch.path("dir")).unwrap();
    let dir = scratch.path("dir");
    let missing = scratch.path("missing.txt");
    let glob = scratch.path("*.txt");
    let glob_none = scratch.path("*.nomatch");
    let glob_q = scratch.path("existing.tx?");
    let glob_set = scratch.path("[ab].txt");
    with_py(|py, ns| {
        let v = FilesOrPatterns;
        ok(py, ns, v, &lit(&file), &format!("[{}]", lit(&file)));
        // A directory exists too.
        ok(py, ns, v, &lit(&dir), &format!("[{}]", lit(&dir)));
        ok(
            py,
            ns,
            v,
            &format!("' {file} '"),
            &format!("[{}]", lit(&file)),
        );
        err(
            py,
            ns,
            v,
            &lit(&missing),
            &format!("File {missing} does not exists."),
        );
        // Glob patterns are kept unexpanded, matching or not.
        for g in [&glob, &glob_none, &glob_q, &glob_set] {
            ok(py, ns, v, &lit(g), &format!("[{}]", lit(g)));
        }
        ok(
            py,
            ns,
            v,
            &format!("[{}, {}]", lit(&file), lit(&glob_none)),
            &format!("[{}, {}]", lit(&file), lit(&glob_none)),
        );
        err(
            py,
            ns,
            v,
            &format!("[{}, {}]", lit(&glob), lit(&missing)),
            &format!("File {missing} does not exists."),
        );
        ok(py, ns, v, "None", "[]");
        ok(py, ns, v, "[]", "[]");
        ok(py, ns, v, "''", "[]");
        err(py, ns, v, "[5]", "Not a string: 5");
    });
}

#[test]
fn addr_list() {
    with_py(|py, ns| {
        let v = AddrList;
        ok(py, ns, v, "'127.0.0.1, ::1'", "['127.0.0.1', '::1']");
        ok(py, ns, v, "'*'", "['*']");
        ok(py, ns, v, "'10.0.0.0/8, *'", "['10.0.0.0/8', '*']");
        ok(py, ns, v, "'fd00::/8'", "['fd00::/8']");
        ok(py, ns, v, "''", "[]");
        ok(py, ns, v, "None", "[]");
        err(py, ns, v, "'10.0.0.1/8'", "10.0.0.1/8 has host bits set");
        err(
            py,
            ns,
            v,
            "'nonsense'",
            "'nonsense' does not appear to be an IPv4 or IPv6 network",
        );
        err(
            py,
            ns,
            v,
            "'a,,b'",
            "'a' does not appear to be an IPv4 or IPv6 network",
        );
        err(py, ns, v, "['127.0.0.1']", "Not a string: ['127.0.0.1']");
    });
}

#[test]
fn comma_list() {
    with_py(|py, ns| {
        let v = CommaList;
        ok(
            py,
            ns,
            v,
            "'SCRIPT_NAME, PATH_INFO'",
            "['SCRIPT_NAME', 'PATH_INFO']",
        );
        ok(py, ns, v, "' a , b ,'", "['a', 'b']");
        ok(py, ns, v, "'a,,b'", "['a', 'b']");
        // Only empty items are dropped; blank ones are kept, stripped.
        ok(py, ns, v, "'a, ,b'", "['a', '', 'b']");
        ok(py, ns, v, "','", "[]");
        ok(py, ns, v, "''", "[]");
        ok(py, ns, v, "None", "[]");
        err(py, ns, v, "5", "Not a string: 5");
    });
}

#[test]
fn ssl_version() {
    with_py(|py, ns| {
        // Deprecated and ignored: any value is kept as it is.
        same(py, ns, SslVersion, "ssl.PROTOCOL_TLS");
        ok(
            py,
            ns,
            SslVersion,
            "ssl.PROTOCOL_TLS",
            "<_SSLMethod.PROTOCOL_TLS: 2>",
        );
        ok(py, ns, SslVersion, "5", "5");
        ok(py, ns, SslVersion, "'TLSv1'", "'TLSv1'");
    });
}

#[test]
fn proxy_protocol() {
    with_py(|py, ns| {
        let v = ProxyProtocol;
        for (input, want) in [
            ("True", "'auto'"),
            ("False", "'off'"),
            ("None", "'off'"),
            ("'V1'", "'v1'"),
            ("' v2 '", "'v2'"),
            ("'none'", "'off'"),
            ("'off'", "'off'"),
            ("'false'", "'off'"),
            ("'0'", "'off'"),
            ("'1'", "'auto'"),
            ("'TRUE'", "'auto'"),
            ("'auto'", "'auto'"),
        ] {
            ok(py, ns, v, input, want);
        }
        err(
            py,
            ns,
            v,
            "'bad'",
            "proxy_protocol must be: off, v1, v2, or auto",
        );
        err(
            py,
            ns,
            v,
            "'v3'",
            "proxy_protocol must be: off, v1, v2, or auto",
        );
        err(py, ns, v, "5", "proxy_protocol must be string or bool");
    });
}

#[test]
fn http_protocols() {
    with_py(|py, ns| {
        let v = HttpProtocols;
        ok(py, ns, v, "'h1,h2'", "['h1', 'h2']");
        ok(py, ns, v, "' H2 , h1 '", "['h2', 'h1']");
        ok(py, ns, v, "'h2'", "['h2']");
        ok(py, ns, v, "''", "['h1']");
        ok(py, ns, v, "','", "['h1']");
        ok(py, ns, v, "None", "['h1']");
        err(
            py,
            ns,
            v,
            "'h3'",
            "Invalid protocol 'h3'. Valid protocols: h1, h2",
        );
        err(
            py,
            ns,
            v,
            "'h1, H3'",
            "Invalid protocol 'h3'. Valid protocols: h1, h2",
        );
        err(py, ns, v, "'h1,h1'", "Duplicate protocols specified");
        err(py, ns, v, "'h1,h2,h1'", "Duplicate protocols specified");
        err(py, ns, v, "5", "http_protocols must be a string");
        err(py, ns, v, "['h1']", "http_protocols must be a string");
    });
}

#[test]
fn http2_cleartext() {
    with_py(|py, ns| {
        let v = Http2Cleartext;
        ok(py, ns, v, "True", "'prior-knowledge'");
        ok(py, ns, v, "False", "'off'");
        ok(py, ns, v, "None", "'off'");
        ok(py, ns, v, "'Upgrade'", "'upgrade'");
        ok(py, ns, v, "' BOTH '", "'both'");
        ok(py, ns, v, "'prior-knowledge'", "'prior-knowledge'");
        ok(py, ns, v, "'off'", "'off'");
        err(py, ns, v, "'bad'", "Invalid http2_cleartext: bad");
        err(py, ns, v, "' Bad '", "Invalid http2_cleartext: bad");
        err(py, ns, v, "5", "Invalid type for casting: 5");
    });
}

#[test]
fn http2_stream_limit() {
    with_py(|py, ns| {
        let v = Http2StreamLimit;
        ok(py, ns, v, "1", "1");
        ok(py, ns, v, "'7'", "7");
        ok(py, ns, v, "'0x10'", "16");
        ok(py, ns, v, "2**70", "1180591620717411303424");
        err(
            py,
            ns,
            v,
            "0",
            "HTTP/2 max concurrent streams must be at least 1: 0",
        );
        err(
            py,
            ns,
            v,
            "False",
            "HTTP/2 max concurrent streams must be at least 1: 0",
        );
        err(py, ns, v, "-1", "Value must be positive: -1");
        err(
            py,
            ns,
            v,
            "'x'",
            "invalid literal for int() with base 0: 'x'",
        );
    });
}

#[test]
fn http2_window_size() {
    with_py(|py, ns| {
        let v = Http2WindowSize;
        ok(py, ns, v, "2**31 - 1", "2147483647");
        ok(py, ns, v, "0", "0");
        ok(py, ns, v, "'0x10'", "16");
        ok(py, ns, v, "65535", "65535");
        err(
            py,
            ns,
            v,
            "2**31",
            "HTTP/2 window size must be at most 2147483647: 2147483648",
        );
        err(
            py,
            ns,
            v,
            "2**70",
            "HTTP/2 window size must be at most 2147483647: 1180591620717411303424",
        );
        err(py, ns, v, "-1", "Value must be positive: -1");
    });
}

#[test]
fn http2_frame_size() {
    with_py(|py, ns| {
        let v = Http2FrameSize;
        ok(py, ns, v, "16384", "16384");
        ok(py, ns, v, "16777215", "16777215");
        ok(py, ns, v, "'0x4000'", "16384");
        for (input, shown) in [
            ("16383", "16383"),
            ("16777216", "16777216"),
            ("True", "1"),
            ("-1", "-1"),
            ("2**70", "1180591620717411303424"),
        ] {
            err(
                py,
                ns,
                v,
                input,
                &format!("http2_max_frame_size must be between 16384 and 16777215, got {shown}"),
            );
        }
        err(
            py,
            ns,
            v,
            "'x'",
            "invalid literal for int() with base 0: 'x'",
        );
    });
}

#[test]
fn header_map() {
    with_py(|py, ns| {
        let v = HeaderMap;
        ok(py, ns, v, "'drop'", "'drop'");
        ok(py, ns, v, "' REFUSE '", "'refuse'");
        ok(py, ns, v, "'Dangerous'", "'dangerous'");
        ok(py, ns, v, "None", "None");
        err(py, ns, v, "'bad'", "Invalid header map behaviour: bad");
        // This one shows the value as given, not normalised.
        err(py, ns, v, "' Bad '", "Invalid header map behaviour:  Bad ");
        err(py, ns, v, "5", "Invalid type for casting: 5");
    });
}

#[test]
fn asgi_loop() {
    with_py(|py, ns| {
        let v = AsgiLoop;
        ok(py, ns, v, "'auto'", "'auto'");
        ok(py, ns, v, "' UVLOOP '", "'uvloop'");
        ok(py, ns, v, "'asyncio'", "'asyncio'");
        ok(py, ns, v, "None", "'auto'");
        err(py, ns, v, "'trio'", "Invalid ASGI loop: trio");
        err(py, ns, v, "' Trio '", "Invalid ASGI loop: trio");
        err(py, ns, v, "5", "Invalid type for casting: 5");
    });
}

#[test]
fn asgi_lifespan() {
    with_py(|py, ns| {
        let v = AsgiLifespan;
        ok(py, ns, v, "'on'", "'on'");
        ok(py, ns, v, "' OFF '", "'off'");
        ok(py, ns, v, "'auto'", "'auto'");
        ok(py, ns, v, "None", "'auto'");
        err(py, ns, v, "'maybe'", "Invalid ASGI lifespan: maybe");
        err(py, ns, v, "' Maybe '", "Invalid ASGI lifespan: maybe");
        err(py, ns, v, "5", "Invalid type for casting: 5");
    });
}

#[test]
fn http_parser() {
    with_py(|py, ns| {
        let v = HttpParser;
        ok(py, ns, v, "'auto'", "'auto'");
        ok(py, ns, v, "' FAST '", "'fast'");
        ok(py, ns, v, "'python'", "'python'");
        ok(py, ns, v, "None", "'auto'");
        err(
            py,
            ns,
            v,
            "'c'",
            "http_parser must be one of: auto, fast, python",
        );
        err(
            py,
            ns,
            v,
            "' C '",
            "http_parser must be one of: auto, fast, python",
        );
        err(py, ns, v, "5", "http_parser must be a string");
    });
}

#[test]
fn to_pyerr_raises_a_type_error_with_the_message() {
    with_py(|py, _| {
        let e = to_pyerr(Invalid("Value must be positive: -1".into()));
        assert!(e.is_instance_of::<pyo3::exceptions::PyTypeError>(py));
        assert_eq!(e.value(py).to_string(), "Value must be positive: -1");
    });
}

fn tcp(host: &str, port: u16) -> Result<Address, AddressError> {
    Ok(Address::Tcp(host.into(), port))
}

/// Every bind form of gunicorn's `util.parse_address` (gunicorn-cli.md §6).
#[test]
fn parse_address_bind_forms() {
    let cases: &[(&str, Result<Address, AddressError>)] = &[
        // HOST:PORT, host lowercased
        ("127.0.0.1:8000", tcp("127.0.0.1", 8000)),
        ("Example.COM:81", tcp("example.com", 81)),
        ("h: 80 ", tcp("h", 80)),
        // only the first two ':'-separated parts are used
        ("h:1:2", tcp("h", 1)),
        // HOST: the default port
        ("LocalHost", tcp("localhost", 8000)),
        // empty
        ("", tcp("0.0.0.0", 8000)),
        // [v6]:port and [v6]
        ("[::1]:9000", tcp("::1", 9000)),
        ("[::]:80", tcp("::", 80)),
        ("[::1]", tcp("::1", 8000)),
        ("[FE80::1]:81", tcp("fe80::1", 81)),
        // bare IPv6 is HOST:PORT with an empty port
        ("::1", Err("'' is not a valid port number.".into())),
        // tcp:// prefix stripped
        ("tcp://Example.com:81", tcp("example.com", 81)),
        ("tcp://h", tcp("h", 8000)),
        ("tcp://[::1]:5000", tcp("::1", 5000)),
        // unix:PATH, unix://rel (relative), unix:///abs
        ("unix:/tmp/s", Ok(Address::Unix("/tmp/s".into()))),
        ("unix:rel/s", Ok(Address::Unix("rel/s".into()))),
        ("unix://rel/sock", Ok(Address::Unix("rel/sock".into()))),
        ("unix:///abs", Ok(Address::Unix("/abs".into()))),
        // fd://N
        ("fd://3", Ok(Address::Fd(3))),
        ("fd:// 3", Ok(Address::Fd(3))),
        ("fd://x", Err("'x' is not a valid file descriptor.".into())),
        // HOST:notaport
        (
            "h:notaport",
            Err("'notaport' is not a valid port number.".into()),
        ),
        ("[::1]:x", Err("'x' is not a valid port number.".into())),
    ];
    for (netloc, want) in cases {
        assert_eq!(&parse_address(netloc, "8000"), want, "{netloc:?}");
    }
    assert_eq!(parse_address("h", "8125"), tcp("h", 8125));
}

#[test]
fn py_str_is_str() {
    with_py(|py, ns| {
        assert_eq!(py_str(&eval(py, ns, "'a'")), "a");
        assert_eq!(py_str(&eval(py, ns, "['a']")), "['a']");
        assert_eq!(py_str(&eval(py, ns, "None")), "None");
    });
}
