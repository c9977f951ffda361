//! Streaming, bounded XML reading for the package's metadata parts.
//!
//! Every XML part is read as a stream of events straight from where its bytes
//! come from (an inflating zip entry, a run of hash-checked blocks, a buffer),
//! never inflated or decoded whole first. The [`Limits`](crate::Limits) are
//! checked while reading: elements per part, attributes per element, decoded
//! bytes per part and bytes in one tag, text run or comment. A hostile part is
//! refused at the first event past a bound, having cost about that much work
//! and memory. Duplicate attributes are found with a hash set (linear time);
//! documents with a DOCTYPE (and so any custom entity) are refused, and depth
//! is bounded.
//!
//! [`Parser`] hands out start tags (namespace URI, local name, attributes),
//! end tags and, when asked, text. The block map, stream map and file-system
//! metadata read those events into their own structures; the manifest, whose
//! shape is open-ended, is read into a small tree of only the elements it needs
//! ([`read_tree`]).

use std::collections::HashSet;
use std::io::{self, BufRead, Read};

use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;

use crate::Limits;
use crate::error::{FormatError, Result};

const MAX_DEPTH: usize = 64;
/// Bytes of a part handed to the decoder at a time.
const CHUNK: usize = 64 * 1024;
/// Up to this many attributes, duplicates are looked for by comparing pairs.
const SMALL_ATTRIBUTES: usize = 16;

/// Where a part's raw bytes come from, a piece at a time.
pub(crate) trait Chunks {
    /// The next piece of the part, `None` at its end. Checks that only the end
    /// of the part can make (sizes, CRC) are done before returning `None`.
    fn next_chunk(&mut self) -> Result<Option<&[u8]>>;
}

/// A part held in memory.
pub(crate) struct SliceChunks<'a> {
    rest: &'a [u8],
}

impl<'a> SliceChunks<'a> {
    /// The part `bytes`.
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        SliceChunks { rest: bytes }
    }
}

impl Chunks for SliceChunks<'_> {
    fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (now, later) = self.rest.split_at(self.rest.len().min(CHUNK));
        self.rest = later;
        Ok(Some(now))
    }
}

/// The bounds one XML part is read under (from [`Limits`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct XmlLimits {
    /// Most elements in the part.
    pub elements: u64,
    /// Most attributes (namespace declarations included) on one element.
    pub attributes: u64,
    /// Most bytes of the part, decoded to UTF-8.
    pub size: u64,
    /// Most bytes in one tag, text run, comment or other markup.
    pub token: u64,
}

impl From<&Limits> for XmlLimits {
    fn from(l: &Limits) -> Self {
        XmlLimits {
            elements: l.max_xml_elements,
            attributes: l.max_xml_attributes,
            size: l.max_xml_size,
            token: l.max_xml_token,
        }
    }
}

impl Default for XmlLimits {
    fn default() -> Self {
        XmlLimits::from(&Limits::default())
    }
}

fn limit(part: &str, what: &'static str, limit: u64) -> FormatError {
    FormatError::XmlLimit {
        part: part.to_owned(),
        what,
        limit,
    }
}

/// How the part's bytes are encoded (its byte-order mark decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// Not known yet: fewer than three bytes seen.
    Unknown,
    Utf8,
    Utf16Le,
    Utf16Be,
}

/// The part's text as UTF-8, for quick-xml: decodes UTF-16, checks UTF-8, counts
/// bytes against the part's size bound and the current token's bound, and keeps
/// the first error of the source (as a [`FormatError`]) for the parser to report.
struct Input<C> {
    chunks: C,
    part: String,
    encoding: Encoding,
    /// Bytes not decoded yet: a byte-order mark being sniffed, the start of a
    /// UTF-8 sequence or of a UTF-16 unit or surrogate pair cut by a chunk's end.
    carry: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    decoded: u64,
    in_token: u64,
    limits: XmlLimits,
    failure: Option<FormatError>,
    done: bool,
}

impl<C: Chunks> Input<C> {
    fn fail(&mut self, error: FormatError) -> io::Error {
        let message = error.to_string();
        self.failure.get_or_insert(error);
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    fn bad(&mut self, reason: String) -> io::Error {
        let error = FormatError::xml(&self.part, reason);
        self.fail(error)
    }

    fn refill(&mut self) -> io::Result<()> {
        self.out.clear();
        self.pos = 0;
        let decoded = match self.chunks.next_chunk() {
            Err(e) => return Err(self.fail(e)),
            Ok(Some(chunk)) => decode(
                &mut self.encoding,
                &mut self.carry,
                &mut self.out,
                chunk,
                false,
            ),
            Ok(None) => {
                self.done = true;
                decode(
                    &mut self.encoding,
                    &mut self.carry,
                    &mut self.out,
                    &[],
                    true,
                )
            }
        };
        if let Err(reason) = decoded {
            return Err(self.bad(reason));
        }
        self.decoded += self.out.len() as u64;
        if self.decoded > self.limits.size {
            let e = limit(
                &self.part,
                "bytes of decoded text (Limits::max_xml_size)",
                self.limits.size,
            );
            return Err(self.fail(e));
        }
        Ok(())
    }
}

impl<C: Chunks> Read for Input<C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<C: Chunks> BufRead for Input<C> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.failure.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the part was refused",
            ));
        }
        if self.in_token > self.limits.token {
            let e = limit(
                &self.part,
                "bytes in one tag, text or comment (Limits::max_xml_token)",
                self.limits.token,
            );
            return Err(self.fail(e));
        }
        while self.pos == self.out.len() && !self.done {
            self.refill()?;
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, amt: usize) {
        self.pos += amt;
        self.in_token += amt as u64;
    }
}

/// Decode `input` (after what `carry` holds) into UTF-8 in `out`, keeping an
/// incomplete sequence at the end in `carry`. With `last`, nothing may be left.
fn decode(
    encoding: &mut Encoding,
    carry: &mut Vec<u8>,
    out: &mut Vec<u8>,
    input: &[u8],
    last: bool,
) -> std::result::Result<(), String> {
    let joined;
    let mut data: &[u8] = if carry.is_empty() {
        input
    } else {
        carry.extend_from_slice(input);
        joined = std::mem::take(carry);
        &joined
    };
    if *encoding == Encoding::Unknown {
        if data.len() < 3 && !last {
            carry.extend_from_slice(data);
            return Ok(());
        }
        *encoding = if let Some(rest) = data.strip_prefix(b"\xFF\xFE") {
            data = rest;
            Encoding::Utf16Le
        } else if let Some(rest) = data.strip_prefix(b"\xFE\xFF") {
            data = rest;
            Encoding::Utf16Be
        } else {
            data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
            Encoding::Utf8
        };
    }
    match *encoding {
        Encoding::Unknown => unreachable!("decided above"),
        Encoding::Utf8 => match std::str::from_utf8(data) {
            Ok(_) => out.extend_from_slice(data),
            Err(e) if e.error_len().is_none() && !last => {
                out.extend_from_slice(&data[..e.valid_up_to()]);
                carry.extend_from_slice(&data[e.valid_up_to()..]);
            }
            Err(e) => return Err(format!("not UTF-8 or UTF-16: {e}")),
        },
        Encoding::Utf16Le | Encoding::Utf16Be => {
            let from: fn([u8; 2]) -> u16 = if *encoding == Encoding::Utf16Le {
                u16::from_le_bytes
            } else {
                u16::from_be_bytes
            };
            let mut whole = data.len() & !1;
            // A high surrogate at the end waits for its partner in the next chunk.
            if !last && whole >= 2 {
                let unit = from([data[whole - 2], data[whole - 1]]);
                if (0xD800..0xDC00).contains(&unit) {
                    whole -= 2;
                }
            }
            if last && whole != data.len() {
                return Err("UTF-16 text with an odd number of bytes".to_owned());
            }
            let units = data[..whole].chunks_exact(2).map(|c| from([c[0], c[1]]));
            let mut utf8 = [0u8; 4];
            for c in char::decode_utf16(units) {
                let c = c.map_err(|_| "invalid UTF-16".to_owned())?;
                out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
            carry.extend_from_slice(&data[whole..]);
        }
    }
    Ok(())
}

/// A start tag: namespace URI, local name, attributes by local name.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tag {
    /// Namespace URI of the element, if bound.
    pub namespace: Option<String>,
    /// Local name.
    pub name: String,
    /// Attributes by local name, in document order (namespace declarations left out).
    pub attributes: Vec<(String, String)>,
}

impl Tag {
    /// The value of an attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What [`Parser::next`] hands out. An empty element is a `Start` and an `End`.
#[derive(Debug)]
pub(crate) enum Node {
    /// An element starts.
    Start(Tag),
    /// The innermost open element ends.
    End,
    /// Text (with entities resolved) inside an element; only when asked for.
    Text(String),
}

/// A pull parser over one part, within its limits.
pub(crate) struct Parser<C: Chunks> {
    reader: NsReader<Input<C>>,
    part: String,
    buf: Vec<u8>,
    depth: usize,
    elements: u64,
    limits: XmlLimits,
    text: bool,
    root_done: bool,
}

impl<C: Chunks> Parser<C> {
    /// Read the part called `part` (for messages) from `chunks`. With `text`,
    /// text inside elements is handed out; otherwise it is only checked.
    pub fn new(part: &str, chunks: C, limits: XmlLimits, text: bool) -> Self {
        let input = Input {
            chunks,
            part: part.to_owned(),
            encoding: Encoding::Unknown,
            carry: Vec::new(),
            out: Vec::with_capacity(CHUNK),
            pos: 0,
            decoded: 0,
            in_token: 0,
            limits,
            failure: None,
            done: false,
        };
        let mut reader = NsReader::from_reader(input);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = true;
        Parser {
            reader,
            part: part.to_owned(),
            buf: Vec::new(),
            depth: 0,
            elements: 0,
            limits,
            text,
            root_done: false,
        }
    }

    /// How many elements are open (1 inside the root element).
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// The part's name, for messages.
    pub fn part(&self) -> &str {
        &self.part
    }

    fn bad(&self, reason: impl Into<String>) -> FormatError {
        FormatError::xml(&self.part, reason)
    }

    /// The next start tag, end tag or text; `None` after the end of the document.
    pub fn next(&mut self) -> Result<Option<Node>> {
        loop {
            self.reader.get_mut().in_token = 0;
            let position = self.reader.buffer_position();
            self.buf.clear();
            let (ns, event) = match self.reader.read_resolved_event_into(&mut self.buf) {
                Ok(x) => x,
                Err(e) => {
                    return Err(match self.reader.get_mut().failure.take() {
                        Some(failure) => failure,
                        None => FormatError::xml(&self.part, format!("after byte {position}: {e}")),
                    });
                }
            };
            let namespace = match ns {
                ResolveResult::Bound(n) => Some(String::from_utf8_lossy(n.as_ref()).into_owned()),
                _ => None,
            };
            if self.reader.get_ref().in_token > self.limits.token {
                return Err(limit(
                    &self.part,
                    "bytes in one tag, text or comment (Limits::max_xml_token)",
                    self.limits.token,
                ));
            }
            let bad = |reason: &str| FormatError::xml(&self.part, reason);
            match event {
                // With expand_empty_elements, `<a/>` arrives as a start and an end.
                Event::Start(ref e) | Event::Empty(ref e) => {
                    if self.root_done {
                        return Err(bad("content after the root element"));
                    }
                    if self.depth >= MAX_DEPTH {
                        return Err(bad("elements nested too deeply"));
                    }
                    self.elements += 1;
                    if self.elements > self.limits.elements {
                        return Err(limit(
                            &self.part,
                            "elements (Limits::max_xml_elements)",
                            self.limits.elements,
                        ));
                    }
                    let name = std::str::from_utf8(e.local_name().as_ref())
                        .map_err(|_| bad("an element name is not UTF-8"))?
                        .to_owned();
                    let mut tag = Tag {
                        namespace,
                        name,
                        attributes: Vec::new(),
                    };
                    let mut keys: Vec<&[u8]> = Vec::new();
                    let mut seen: Option<HashSet<&[u8]>> = None;
                    for attr in e.attributes().with_checks(false) {
                        let attr = attr.map_err(|e| bad(&format!("bad attribute: {e}")))?;
                        let key: &[u8] = attr.key.into_inner();
                        let count = keys.len() as u64 + seen.as_ref().map_or(0, |s| s.len() as u64);
                        if count >= self.limits.attributes {
                            return Err(limit(
                                &self.part,
                                "attributes on one element (Limits::max_xml_attributes)",
                                self.limits.attributes,
                            ));
                        }
                        let duplicate = match &mut seen {
                            Some(set) => !set.insert(key),
                            None if keys.len() < SMALL_ATTRIBUTES => {
                                let d = keys.contains(&key);
                                keys.push(key);
                                d
                            }
                            None => {
                                let mut set: HashSet<&[u8]> = keys.drain(..).collect();
                                let d = !set.insert(key);
                                seen = Some(set);
                                d
                            }
                        };
                        if duplicate {
                            return Err(bad(&format!(
                                "<{}> has the attribute {} twice",
                                tag.name,
                                String::from_utf8_lossy(key)
                            )));
                        }
                        if attr.key.as_namespace_binding().is_some() {
                            continue;
                        }
                        let value = attr
                            .unescape_value()
                            .map_err(|e| bad(&format!("bad attribute value: {e}")))?;
                        let local = std::str::from_utf8(attr.key.local_name().into_inner())
                            .map_err(|_| bad("an attribute name is not UTF-8"))?
                            .to_owned();
                        tag.attributes.push((local, value.into_owned()));
                    }
                    self.depth += 1;
                    return Ok(Some(Node::Start(tag)));
                }
                Event::End(_) => {
                    self.depth = self
                        .depth
                        .checked_sub(1)
                        .ok_or_else(|| bad("unbalanced end tag"))?;
                    if self.depth == 0 {
                        self.root_done = true;
                    }
                    return Ok(Some(Node::End));
                }
                Event::Text(t) => {
                    if self.depth == 0 || self.text {
                        let s = t.decode().map_err(|e| bad(&e.to_string()))?;
                        if let Some(node) = text_node(self.depth, self.text, &self.part, &s)? {
                            return Ok(Some(node));
                        }
                    }
                }
                Event::CData(t) => {
                    if self.depth == 0 || self.text {
                        let s = t.decode().map_err(|e| bad(&e.to_string()))?;
                        if let Some(node) = text_node(self.depth, self.text, &self.part, &s)? {
                            return Ok(Some(node));
                        }
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved =
                        if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e.to_string()))? {
                            c.to_string()
                        } else {
                            let name = r.decode().map_err(|e| bad(&e.to_string()))?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .ok_or_else(|| bad(&format!("unknown entity &{name};")))?
                                .to_owned()
                        };
                    if let Some(node) = text_node(self.depth, self.text, &self.part, &resolved)? {
                        return Ok(Some(node));
                    }
                }
                Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed")),
                Event::Eof => {
                    if self.depth > 0 {
                        return Err(bad("unexpected end of document"));
                    }
                    if !self.root_done {
                        return Err(bad("no root element"));
                    }
                    return Ok(None);
                }
                Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            }
        }
    }

    /// Skip the rest of the element just started (its children and its end tag).
    pub fn skip(&mut self) -> Result<()> {
        let depth = self.depth;
        while self.depth >= depth {
            if self.next()?.is_none() {
                return Err(self.bad("unexpected end of document"));
            }
        }
        Ok(())
    }
}

/// Text found at `depth`: an error outside the root element unless blank; a
/// node when text is wanted.
fn text_node(depth: usize, wanted: bool, part: &str, s: &str) -> Result<Option<Node>> {
    if depth == 0 {
        if s.trim().is_empty() {
            return Ok(None);
        }
        return Err(FormatError::xml(part, "text outside the root element"));
    }
    Ok(wanted.then(|| Node::Text(s.to_owned())))
}

/// One element of a tree read with [`read_tree`].
#[derive(Debug, Default)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Attributes by local name, in document order.
    pub attributes: Vec<(String, String)>,
    /// Child elements that were kept.
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

/// Read a whole part into a tree of the elements `keep(depth, parent's local
/// name, local name)` accepts (the root has depth 0 and the parent ""; an
/// element is only considered when its parent was kept, and once: `keep` may
/// count). Elements left out are still read and checked, but not held.
pub(crate) fn read_tree<C: Chunks>(
    parser: &mut Parser<C>,
    mut keep: impl FnMut(usize, &str, &str) -> bool,
) -> Result<Element> {
    let mut stack: Vec<Element> = Vec::new();
    let mut root = None;
    while let Some(node) = parser.next()? {
        match node {
            Node::Start(tag) => {
                let parent = stack.last().map_or("", |e| e.name.as_str());
                if !keep(stack.len(), parent, &tag.name) {
                    parser.skip()?;
                    continue;
                }
                stack.push(Element {
                    name: tag.name,
                    attributes: tag.attributes,
                    ..Element::default()
                });
            }
            Node::End => {
                let element = stack
                    .pop()
                    .ok_or_else(|| parser.bad("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(element),
                    None => root = Some(element),
                }
            }
            Node::Text(s) => {
                if let Some(e) = stack.last_mut() {
                    e.text.push_str(&s);
                }
            }
        }
    }
    root.ok_or_else(|| parser.bad("no root element"))
}

/// Read a whole document held in memory into a tree (every element kept).
#[cfg(test)]
pub fn parse(part: &str, bytes: &[u8]) -> Result<Element> {
    let mut parser = Parser::new(part, SliceChunks::new(bytes), XmlLimits::default(), true);
    read_tree(&mut parser, |_, _, _| true)
}

/// Escape a string for an attribute value or text.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Parse a required unsigned attribute.
pub fn attr_u64(part: &str, tag: &Tag, name: &str) -> Result<u64> {
    let v = tag
        .attr(name)
        .ok_or_else(|| FormatError::xml(part, format!("<{}> without {name}", tag.name)))?;
    v.parse()
        .map_err(|_| FormatError::xml(part, format!("<{}> {name}={v:?} is not a number", tag.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespaces_entities_and_text() {
        let doc = br#"<?xml version="1.0"?><a:R xmlns:a="urn:x" k="1 &amp; 2"><C>x&lt;y&#65;</C><C/></a:R>"#;
        let root = parse("t", doc).unwrap();
        let mut parser = Parser::new("t", SliceChunks::new(doc), XmlLimits::default(), false);
        match parser.next().unwrap() {
            Some(Node::Start(tag)) => assert_eq!(tag.namespace.as_deref(), Some("urn:x")),
            other => panic!("{other:?}"),
        }
        assert_eq!(root.attr("k"), Some("1 & 2"));
        assert_eq!(root.children_named("C").count(), 2);
        assert_eq!(root.child("C").unwrap().text, "x<yA");
    }

    #[test]
    fn reads_utf16_with_a_byte_order_mark() {
        let mut doc = vec![0xFF, 0xFE];
        for unit in "<?xml version=\"1.0\" encoding=\"utf-16\"?><a b=\"é𝄞\"/>".encode_utf16() {
            doc.extend_from_slice(&unit.to_le_bytes());
        }
        assert_eq!(parse("t", &doc).unwrap().attr("b"), Some("é𝄞"));
        assert!(parse("t", &doc[..doc.len() - 1]).is_err());
        // The same document cut into pieces of every small size decodes the same.
        for size in 1..8 {
            let chunks = Pieces(doc.chunks(size).collect(), Vec::new());
            let mut parser = Parser::new("t", chunks, XmlLimits::default(), true);
            let root = read_tree(&mut parser, |_, _, _| true).unwrap();
            assert_eq!(root.attr("b"), Some("é𝄞"), "pieces of {size}");
        }
    }

    #[test]
    fn reads_utf8_cut_inside_a_character() {
        let doc = "\u{FEFF}<a b=\"é𝄞\">ü</a>".as_bytes();
        for size in 1..6 {
            let chunks = Pieces(doc.chunks(size).collect(), Vec::new());
            let mut parser = Parser::new("t", chunks, XmlLimits::default(), true);
            let root = read_tree(&mut parser, |_, _, _| true).unwrap();
            assert_eq!((root.attr("b"), root.text.as_str()), (Some("é𝄞"), "ü"));
        }
        assert!(parse("t", b"<a b=\"\xC3\"/>").is_err());
        assert!(parse("t", b"<a/>\xE2\x82").is_err());
    }

    /// A part handed over in the given pieces.
    struct Pieces<'a>(Vec<&'a [u8]>, Vec<u8>);

    impl Chunks for Pieces<'_> {
        fn next_chunk(&mut self) -> Result<Option<&[u8]>> {
            if self.0.is_empty() {
                return Ok(None);
            }
            self.1 = self.0.remove(0).to_vec();
            Ok(Some(&self.1))
        }
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
            b"<a/>text",
            b"<a x=\"1\" x=\"2\"/>",
            b"<a p:x=\"1\" p:x=\"2\" xmlns:p=\"u\"/>",
        ] {
            assert!(parse("t", doc).is_err(), "{}", String::from_utf8_lossy(doc));
        }
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert!(parse("t", deep.as_bytes()).is_err());
    }

    fn parse_with(doc: &[u8], limits: XmlLimits) -> Result<Element> {
        let mut parser = Parser::new("P.xml", SliceChunks::new(doc), limits, true);
        read_tree(&mut parser, |_, _, _| true)
    }

    fn limit_of(result: Result<Element>) -> (String, &'static str, u64) {
        match result {
            Err(FormatError::XmlLimit { part, what, limit }) => (part, what, limit),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_bound_is_checked_and_named() {
        let tight = XmlLimits {
            elements: 3,
            attributes: 2,
            size: 1000,
            token: 100,
        };
        parse_with(b"<a><b x=\"1\" y=\"2\"/><c/></a>", tight).unwrap();
        let (part, what, n) = limit_of(parse_with(b"<a><b/><c/><d/></a>", tight));
        assert_eq!((part.as_str(), n), ("P.xml", 3));
        assert!(what.contains("max_xml_elements"));
        let (_, what, _) = limit_of(parse_with(b"<a x=\"1\" y=\"2\" z=\"3\"/>", tight));
        assert!(what.contains("max_xml_attributes"));
        let (_, what, _) = limit_of(parse_with(
            format!("<a>{}</a>", "<!-- -->".repeat(200)).as_bytes(),
            tight,
        ));
        assert!(what.contains("max_xml_size"));
        let (_, what, _) = limit_of(parse_with(
            format!("<a>{}</a>", "x".repeat(300)).as_bytes(),
            tight,
        ));
        assert!(what.contains("max_xml_token"));
        let message = limit(&part, what, 100).to_string();
        assert!(
            message.contains("P.xml") && message.contains("max_xml_token"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_attributes_are_found_among_many() {
        let many = XmlLimits {
            attributes: 100_000,
            ..XmlLimits::default()
        };
        let attrs: String = (0..50_000).map(|i| format!(" a{i}=\"\"")).collect();
        parse_with(format!("<r{attrs}/>").as_bytes(), many).unwrap();
        let doc = format!("<r{attrs} a49999=\"x\"/>");
        match parse_with(doc.as_bytes(), many) {
            Err(FormatError::InvalidXml { reason, .. }) => {
                assert!(reason.contains("a49999 twice"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn left_out_elements_are_still_checked() {
        let doc = b"<a><keep k=\"1\"/><drop><x/><y/></drop></a>";
        let mut parser = Parser::new("t", SliceChunks::new(doc), XmlLimits::default(), true);
        let root = read_tree(&mut parser, |d, _, n| d == 0 || n == "keep").unwrap();
        assert_eq!(root.children.len(), 1);
        let tight = XmlLimits {
            elements: 3,
            ..XmlLimits::default()
        };
        let mut parser = Parser::new("t", SliceChunks::new(doc), tight, true);
        assert!(matches!(
            read_tree(&mut parser, |d, _, n| d == 0 || n == "keep"),
            Err(FormatError::XmlLimit { .. })
        ));
    }
}
