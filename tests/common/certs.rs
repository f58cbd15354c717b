//! Test certificates, made with the `openssl` command: a CA, a server
//! certificate for 127.0.0.1 and localhost, and a client certificate, as
//! `ca.pem`/`ca.key`, `server.pem`/`server.key`, `client.pem`/`client.key`.

use std::path::Path;
use std::process::Command;

use super::text;

/// Run `openssl args` in `dir`; a failure fails the test.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the openssl command (Debian package `openssl`) is needed by this test");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        text(&out.stderr)
    );
}

/// The `openssl req` options of a new P-256 key.
pub const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// Make the CA, server and client certificates in `dir`.
pub fn make(dir: &Path) {
    let mut ca = vec!["req", "-x509"];
    ca.extend(EC_KEY);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rgunicorn test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &ca);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        ),
        (
            "client",
            "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
        ),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        let (key, csr, pem, extf) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        let subj = format!("/CN=rgunicorn test {name}");
        let mut req = vec!["req"];
        req.extend(EC_KEY);
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", &pem, "-days", "2", "-extfile", &extf,
            ],
        );
    }
}
