//! A small, bounded XML tree on top of quick-xml, for the package's metadata parts.
//!
//! The parts are small and their shapes fixed, so a tree is the clearest way to
//! read them. Element and attribute names are kept as local names with the
//! element's namespace URI; documents with a DOCTYPE (and so any custom entity)
//! are refused, and depth is bounded.

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::error::{FormatError, Result};

const MAX_DEPTH: usize = 64;

/// One element.
#[derive(Debug, Default)]
pub struct Element {
    /// Namespace URI of the element, if bound.
    pub namespace: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes by local name, in document order.
    pub attributes: Vec<(String, String)>,
    /// Child elements.
    pub children: Vec<Element>,
    /// Concatenated text content directly inside this element.
    pub text: String,
}

impl Element {
    /// The value of an attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Child elements with a local name.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The first child element with a local name.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Parse a whole document and return its root element.
pub fn parse(part: &str, bytes: &[u8]) -> Result<Element> {
    let bad = |reason: String| FormatError::xml(part, reason);
    let text = decode_text(bytes).map_err(bad)?;
    let mut reader = NsReader::from_str(&text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let position = reader.buffer_position();
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| bad(format!("after byte {position}: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                if root.is_some() {
                    return Err(bad("content after the root element".into()));
                }
                if stack.len() >= MAX_DEPTH {
                    return Err(bad("elements nested too deeply".into()));
                }
                let mut element = Element {
                    namespace: match ns {
                        ResolveResult::Bound(n) => {
                            Some(String::from_utf8_lossy(n.as_ref()).into_owned())
                        }
                        _ => None,
                    },
                    name: String::from_utf8_lossy(e.local_name().as_ref()).into_owned(),
                    ..Element::default()
                };
                for attr in e.attributes() {
                    let attr = attr.map_err(|e| bad(format!("bad attribute: {e}")))?;
                    if attr.key.as_namespace_binding().is_some() {
                        continue;
                    }
                    let value = attr
                        .unescape_value()
                        .map_err(|e| bad(format!("bad attribute value: {e}")))?;
                    let key = String::from_utf8_lossy(attr.key.local_name().as_ref()).into_owned();
                    element.attributes.push((key, value.into_owned()));
                }
                if matches!(event, Event::Start(_)) {
                    stack.push(element);
                } else {
                    close(&mut stack, &mut root, element);
                }
            }
            Event::End(_) => {
                let element = stack
                    .pop()
                    .ok_or_else(|| bad("unbalanced end tag".into()))?;
                close(&mut stack, &mut root, element);
            }
            Event::Text(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &s, &bad)?;
            }
            Event::CData(t) => {
                let s = t.decode().map_err(|e| bad(e.to_string()))?;
                push_text(&mut stack, &s, &bad)?;
            }
            Event::GeneralRef(r) => {
                let resolved =
                    if let Some(c) = r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                        c.to_string()
                    } else {
                        let name = r.decode().map_err(|e| bad(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| bad(format!("unknown entity &{name};")))?
                            .to_owned()
                    };
                push_text(&mut stack, &resolved, &bad)?;
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed".into())),
            Event::Eof => break,
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(bad("unexpected end of document".into()));
    }
    root.ok_or_else(|| bad("no root element".into()))
}

/// Decode a document's bytes: UTF-8 (with or without a byte-order mark) or
/// UTF-16 with a byte-order mark, as App-V's tools write either.
pub fn decode_text(bytes: &[u8]) -> std::result::Result<std::borrow::Cow<'_, str>, String> {
    let utf16 = |rest: &[u8], from: fn([u8; 2]) -> u16| {
        if !rest.len().is_multiple_of(2) {
            return Err("UTF-16 text with an odd number of bytes".to_owned());
        }
        let units: Vec<u16> = rest.chunks_exact(2).map(|c| from([c[0], c[1]])).collect();
        String::from_utf16(&units)
            .map(std::borrow::Cow::Owned)
            .map_err(|_| "invalid UTF-16".to_owned())
    };
    if let Some(rest) = bytes.strip_prefix(b"\xFF\xFE") {
        utf16(rest, u16::from_le_bytes)
    } else if let Some(rest) = bytes.strip_prefix(b"\xFE\xFF") {
        utf16(rest, u16::from_be_bytes)
    } else {
        std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
            .map(std::borrow::Cow::Borrowed)
            .map_err(|e| format!("not UTF-8 or UTF-16: {e}"))
    }
}

fn close(stack: &mut [Element], root: &mut Option<Element>, element: Element) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(element),
        None => *root = Some(element),
    }
}

fn push_text(stack: &mut [Element], s: &str, bad: &impl Fn(String) -> FormatError) -> Result<()> {
    match stack.last_mut() {
        Some(parent) => {
            parent.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(bad("text outside the root element".into())),
    }
}

/// Escape a string for an attribute value or text.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Parse a required unsigned attribute.
pub fn attr_u64(part: &str, element: &Element, name: &str) -> Result<u64> {
    let v = element
        .attr(name)
        .ok_or_else(|| FormatError::xml(part, format!("<{}> without {name}", element.name)))?;
    v.parse().map_err(|_| {
        FormatError::xml(
            part,
            format!("<{}> {name}={v:?} is not a number", element.name),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_entities_and_text() {
        let doc = br#"<?xml version="1.0"?><a:R xmlns:a="urn:x" k="1 &amp; 2"><C>x&lt;y&#65;</C><C/></a:R>"#;
        let root = parse("t", doc).unwrap();
        assert_eq!(root.namespace.as_deref(), Some("urn:x"));
        assert_eq!(root.attr("k"), Some("1 & 2"));
        assert_eq!(root.children_named("C").count(), 2);
        assert_eq!(root.child("C").unwrap().text, "x<yA");
    }

    #[test]
    fn reads_utf16_with_a_byte_order_mark() {
        let mut doc = vec![0xFF, 0xFE];
        for unit in "<?xml version=\"1.0\" encoding=\"utf-16\"?><a b=\"é\"/>".encode_utf16() {
            doc.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(parse("t", &doc).unwrap().attr("b"), Some("é"));
        assert!(parse("t", &doc[..doc.len() - 1]).is_err());
    }

    #[test]
    fn refuses_broken_and_hostile_documents() {
        for doc in [
            &b"<a><b></a>"[..],
            b"<a>",
            b"",
            b"<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>",
            b"<a>&bogus;</a>",
            b"<a/><b/>",
        ] {
            assert!(parse("t", doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse("t", deep.as_bytes()).is_err());
    }
}
