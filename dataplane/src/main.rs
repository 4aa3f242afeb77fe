//! The one `dataplane` binary: daemon and CLI.
fn main() -> std::process::ExitCode {
    dataplane::cli::main()
}
