//! Tests of params parsing: what is accepted, and that every error names
//! the field at fault.

use std::path::Path;

use super::*;

fn err(text: &str) -> String {
    BdevParams::parse(text.as_bytes()).unwrap_err()
}

#[test]
fn params_parse_and_errors_name_the_field() {
    let p = BdevParams::parse(br#"{"kind":"ram","size":"64M"}"#).unwrap();
    assert_eq!((p.kind, p.size, p.block_size), (Kind::Ram, 64 << 20, 4096));
    let p = BdevParams::parse(
        br#"{"kind":"file","path":"/x/y","size":1048576,"block_size":"64K","direct":true}"#,
    )
    .unwrap();
    assert_eq!(p.path.as_deref(), Some(Path::new("/x/y")));
    assert!(p.direct);
    assert_eq!(p.blocks(), 16);
    for (text, field) in [
        ("", "JSON object"),
        ("[1]", "JSON object"),
        (
            r#"{"kind":"ram","size":"1M","sise":1}"#,
            "sise: unknown field",
        ),
        (r#"{"size":"1M"}"#, "kind: missing"),
        (r#"{"kind":"tape","size":"1M"}"#, "kind: expected"),
        (r#"{"kind":"ram"}"#, "size: missing"),
        (
            r#"{"kind":"ram","size":"12X"}"#,
            "size: unknown size suffix",
        ),
        (
            r#"{"kind":"ram","size":-4}"#,
            "size: expected a whole number",
        ),
        (r#"{"kind":"ram","size":"0"}"#, "size: expected a positive"),
        (
            r#"{"kind":"ram","size":5000}"#,
            "size: expected a positive whole number of blocks",
        ),
        (
            r#"{"kind":"ram","size":"1M","block_size":1000}"#,
            "block_size: expected a power of two",
        ),
        (
            r#"{"kind":"ram","size":"1M","block_size":256}"#,
            "block_size",
        ),
        (
            r#"{"kind":"ram","size":"1M","block_size":true}"#,
            "block_size: expected a size",
        ),
        (r#"{"kind":"file","size":"1M"}"#, "path: missing"),
        (
            r#"{"kind":"file","size":"1M","path":"rel/x"}"#,
            "path: expected an absolute",
        ),
        (
            r#"{"kind":"file","size":"1M","path":7}"#,
            "path: expected a string",
        ),
        (
            r#"{"kind":"ram","size":"1M","path":"/x"}"#,
            "path: only a file pool",
        ),
        (
            r#"{"kind":"ram","size":"1M","direct":true}"#,
            "direct: only a file pool",
        ),
        (
            r#"{"kind":"file","size":"1M","path":"/x","direct":"yes"}"#,
            "direct: expected",
        ),
    ] {
        let e = err(text);
        assert!(e.contains(field), "{text}: {e}");
    }
}
