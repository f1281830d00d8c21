//! The vendor-side collector binary; everything lives in `surveyd::collector`.

fn main() -> std::process::ExitCode {
    surveyd::collector::main()
}
