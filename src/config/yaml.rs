//! A YAML document as a small tree that remembers where every node stood.
//!
//! serde stops at the first problem; an operator wants every problem of a file
//! at once, each with its line and column. So the file is read into this tree
//! (events from saphyr-parser) and the schema walk in `config` reports all it
//! finds.

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub line: usize,
    pub col: usize,
}

impl Loc {
    fn of(span: &Span) -> Loc {
        Loc {
            line: span.start.line(),
            col: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// `plain` is false for quoted and block scalars: `"8"` is text, `8` a number.
    Scalar {
        text: String,
        plain: bool,
        loc: Loc,
    },
    Map {
        entries: Vec<(String, Loc, Node)>,
        loc: Loc,
    },
    Seq {
        items: Vec<Node>,
        loc: Loc,
    },
}

impl Node {
    pub fn loc(&self) -> Loc {
        match self {
            Node::Scalar { loc, .. } | Node::Map { loc, .. } | Node::Seq { loc, .. } => *loc,
        }
    }

    /// `~`, `null` or nothing at all, written plainly.
    pub fn is_null(&self) -> bool {
        matches!(self, Node::Scalar { text, plain: true, .. }
            if text.is_empty() || text == "~" || text.eq_ignore_ascii_case("null"))
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Scalar { .. } => "a scalar",
            Node::Map { .. } => "a mapping",
            Node::Seq { .. } => "a list",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub loc: Loc,
    pub message: String,
}

/// Parses one YAML document. An empty file (or one of comments only) is `None`.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut events = Vec::new();
    for item in Parser::new_from_str(text) {
        match item {
            Ok((event, span)) => events.push((event, span)),
            Err(e) => {
                return Err(SyntaxError {
                    loc: Loc {
                        line: e.marker().line(),
                        col: e.marker().col() + 1,
                    },
                    message: format!("YAML syntax error: {}", e.info()),
                });
            }
        }
    }
    let mut builder = Builder {
        events: events.into_iter(),
        root: None,
    };
    builder.document()?;
    Ok(builder.root)
}

struct Builder<'a> {
    events: std::vec::IntoIter<(Event<'a>, Span)>,
    root: Option<Node>,
}

impl<'a> Builder<'a> {
    fn document(&mut self) -> Result<(), SyntaxError> {
        let mut documents = 0;
        while let Some((event, span)) = self.events.next() {
            match event {
                Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
                Event::StreamEnd => break,
                Event::DocumentStart(_) => {
                    documents += 1;
                    if documents > 1 {
                        return Err(SyntaxError {
                            loc: Loc::of(&span),
                            message:
                                "a configuration file holds one YAML document; found a second `---`"
                                    .into(),
                        });
                    }
                }
                other => {
                    let node = self.node(other, span)?;
                    if self.root.is_some() {
                        return Err(SyntaxError {
                            loc: node.loc(),
                            message: "a configuration file holds one YAML document".into(),
                        });
                    }
                    self.root = Some(node);
                }
            }
        }
        Ok(())
    }

    fn next_event(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        self.events.next().ok_or(SyntaxError {
            loc: Loc { line: 0, col: 0 },
            message: "unexpected end of the YAML document".into(),
        })
    }

    fn node(&mut self, event: Event<'a>, span: Span) -> Result<Node, SyntaxError> {
        let loc = Loc::of(&span);
        match event {
            Event::Scalar(text, style, _, _) => Ok(Node::Scalar {
                text: text.into_owned(),
                plain: style == ScalarStyle::Plain,
                loc,
            }),
            Event::Alias(_) => Err(SyntaxError {
                loc,
                message: "YAML aliases (*name) are not supported in the configuration; write the value out".into(),
            }),
            Event::SequenceStart(_, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.next_event()?;
                    if event == Event::SequenceEnd {
                        break;
                    }
                    items.push(self.node(event, span)?);
                }
                Ok(Node::Seq { items, loc })
            }
            Event::MappingStart(_, _) => {
                let mut entries: Vec<(String, Loc, Node)> = Vec::new();
                loop {
                    let (event, span) = self.next_event()?;
                    if event == Event::MappingEnd {
                        break;
                    }
                    let key_loc = Loc::of(&span);
                    let key = match self.node(event, span)? {
                        Node::Scalar { text, .. } => text,
                        other => {
                            return Err(SyntaxError {
                                loc: key_loc,
                                message: format!("a key must be a plain name, found {}", other.kind_name()),
                            });
                        }
                    };
                    let (event, span) = self.next_event()?;
                    let value = self.node(event, span)?;
                    if let Some((_, first, _)) = entries.iter().find(|(k, _, _)| *k == key) {
                        return Err(SyntaxError {
                            loc: key_loc,
                            message: format!(
                                "duplicate key `{key}` (first given at line {})",
                                first.line
                            ),
                        });
                    }
                    entries.push((key, key_loc, value));
                }
                Ok(Node::Map { entries, loc })
            }
            other => Err(SyntaxError {
                loc,
                message: format!("unexpected YAML event {other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_keeps_locations() {
        let doc = "workers:\n  sched_threads: 8\n  name: \"x\"\n";
        let Some(Node::Map { entries, .. }) = parse(doc).unwrap() else {
            panic!("not a map")
        };
        let (key, loc, Node::Map { entries: inner, .. }) = &entries[0] else {
            panic!("no section")
        };
        assert_eq!(key, "workers");
        assert_eq!(*loc, Loc { line: 1, col: 1 });
        assert_eq!(inner[0].1, Loc { line: 2, col: 3 });
        assert!(matches!(&inner[0].2, Node::Scalar { text, plain: true, .. } if text == "8"));
        assert!(matches!(&inner[1].2, Node::Scalar { text, plain: false, .. } if text == "x"));
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# only a comment\n").unwrap(), None);
    }

    #[test]
    fn duplicates_aliases_and_syntax_errors_are_located() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.loc.line, 2);
        assert!(e.message.contains("duplicate key `a`"));
        let e = parse("a: &x 1\nb: *x\n").unwrap_err();
        assert!(e.message.contains("aliases"), "{e:?}");
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.message.contains("syntax"), "{e:?}");
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("one YAML document"), "{e:?}");
    }
}
