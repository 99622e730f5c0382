//! `kandan-runner connect`: the whole pipeline against Kandan. Stub until the
//! control channel and forwarding land.

use crate::cli::ConnectArgs;

pub async fn run(_args: ConnectArgs) -> i32 {
    eprintln!("error: connect is not available yet");
    1
}
