//! The `rgunicornc` binary: the control socket client; everything happens
//! in the library (`rgunicorn::control::client`).

fn main() {
    let code = rgunicorn::control::client::main(std::env::args().collect());
    std::process::exit(code);
}
