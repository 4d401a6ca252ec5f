//! include/chimaera_module.h against src/abi.rs: a real C compiler builds a
//! program that prints, from the header, every struct's size and alignment,
//! every field's offset and every constant; they must be the Rust ones.
//! The header is written by hand, so this is what keeps it honest.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use chimaera_module::abi::{self, LAYOUT, code, layout_line, level};

fn header_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include")
}

/// The C program: one printf per layout line, then the constants.
fn program() -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include <inttypes.h>\n#include \"chimaera_module.h\"\nint main(void) {\n",
    );
    for item in LAYOUT {
        if item.field.is_empty() {
            writeln!(
                c,
                "  printf(\"{t} %zu %zu\\n\", sizeof({t}), _Alignof({t}));",
                t = item.ty
            )
            .unwrap();
        } else {
            writeln!(
                c,
                "  printf(\"{t}.{f} %zu\\n\", offsetof({t}, {f}));",
                t = item.ty,
                f = item.field
            )
            .unwrap();
        }
    }
    for (name, fmt) in [
        ("CHI_MODULE_ABI_VERSION", "%u"),
        ("CHI_MODULE_LAYOUT_HASH", "0x%016llx"),
        ("CHI_MODULE_SDK_VERSION", "%s"),
        ("CHI_MODULE_ENTRY_SYMBOL", "%s"),
        ("CHI_OK", "%d"),
        ("CHI_TIMED_OUT", "%d"),
        ("CHI_MODULE_ERROR", "%d"),
        ("CHI_NO_SUCH_METHOD", "%d"),
        ("CHI_BAD_INPUT", "%d"),
        ("CHI_LOG_ERROR", "%u"),
        ("CHI_LOG_WARNING", "%u"),
        ("CHI_LOG_INFO", "%u"),
        ("CHI_LOG_DEBUG", "%u"),
        ("CHI_LOG_TRACE", "%u"),
    ] {
        writeln!(c, "  printf(\"{name} {fmt}\\n\", {name});").unwrap();
    }
    c.push_str("  return 0;\n}\n");
    c
}

fn expected() -> String {
    let mut s = String::new();
    for item in LAYOUT {
        writeln!(s, "{}", layout_line(item)).unwrap();
    }
    for (name, value) in [
        ("CHI_MODULE_ABI_VERSION", abi::ABI_VERSION.to_string()),
        (
            "CHI_MODULE_LAYOUT_HASH",
            format!("0x{:016x}", abi::LAYOUT_HASH),
        ),
        ("CHI_MODULE_SDK_VERSION", abi::SDK_VERSION.to_string()),
        ("CHI_MODULE_ENTRY_SYMBOL", abi::ENTRY_SYMBOL.to_string()),
        ("CHI_OK", code::OK.to_string()),
        ("CHI_TIMED_OUT", code::TIMED_OUT.to_string()),
        ("CHI_MODULE_ERROR", code::MODULE_ERROR.to_string()),
        ("CHI_NO_SUCH_METHOD", code::NO_SUCH_METHOD.to_string()),
        ("CHI_BAD_INPUT", code::BAD_INPUT.to_string()),
        ("CHI_LOG_ERROR", level::ERROR.to_string()),
        ("CHI_LOG_WARNING", level::WARNING.to_string()),
        ("CHI_LOG_INFO", level::INFO.to_string()),
        ("CHI_LOG_DEBUG", level::DEBUG.to_string()),
        ("CHI_LOG_TRACE", level::TRACE.to_string()),
    ] {
        writeln!(s, "{name} {value}").unwrap();
    }
    s
}

fn compile_and_run(compiler: &str, std: &str, source_ext: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(format!("layout.{source_ext}"));
    let mut text = program();
    if source_ext == "cpp" {
        // C++ has alignof, not _Alignof.
        text = text.replace("_Alignof", "alignof");
    }
    std::fs::write(&src, text).unwrap();
    let exe = dir.path().join("layout");
    let out = Command::new(compiler)
        .args([std, "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(header_dir())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} rejected the header:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    String::from_utf8(run.stdout).unwrap()
}

#[test]
fn the_c_header_lays_out_every_struct_as_rust_does() {
    let got = compile_and_run("cc", "-std=c11", "c");
    let want = expected();
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w, "chimaera_module.h disagrees with src/abi.rs");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}

#[test]
fn the_header_compiles_as_cpp_with_the_same_layout() {
    let got = compile_and_run("c++", "-std=c++17", "cpp");
    assert_eq!(got, expected());
}
