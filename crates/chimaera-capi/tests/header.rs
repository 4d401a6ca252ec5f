//! include/chimaera.h is what cbindgen makes of this crate with
//! cbindgen.toml: a function, type, status or constant changed in Rust and
//! not in the header (or the reverse) fails here. `CHIMAERA_BLESS=1`
//! rewrites the header instead (then review the diff and commit it).

use std::path::Path;

#[test]
fn checked_in_header_is_what_the_rust_definitions_generate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let path = dir.join("include/chimaera.h");
    if std::env::var_os("CHIMAERA_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    if checked_in != generated {
        let first = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(checked_in.lines().count().min(generated.lines().count()));
        let show = |text: &str| {
            text.lines()
                .skip(first.saturating_sub(2))
                .take(8)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "{} differs from the Rust definitions from line {}:\n--- checked in\n{}\n--- generated\n{}\n\
             Regenerate it with `CHIMAERA_BLESS=1 cargo test -p chimaera-capi --test header` and commit it.",
            path.display(),
            first + 1,
            show(&checked_in),
            show(&generated)
        );
    }
}
