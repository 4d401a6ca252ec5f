fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(chimaera::cli::main_with_args(std::env::args_os()))
}
