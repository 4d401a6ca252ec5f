//! Compatibility name of the original runtime: `chimaera run`.
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(chimaera::cli::compat_main("run"))
}
