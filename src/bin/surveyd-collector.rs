//! The vendor-side collector binary; everything lives in `surveyd::collector`.

fn main() -> std::process::ExitCode {
    surveyd::sys::ignore_file_size_signal();
    surveyd::collector::main()
}
