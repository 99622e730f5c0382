//! Thin entry point: everything is in the library ([`runner::entry`]).

fn main() {
    std::process::exit(runner::entry::run());
}
