//! Compatibility name of the original runtime: `chimaera stop`.
fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(chimaera::cli::compat_main("stop"))
}
