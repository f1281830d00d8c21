//! `surveyd`: the daemon and its admin commands; see `surveyd --help`.

fn main() -> std::process::ExitCode {
    surveyd::daemon::cli::main()
}
