//! Eureka's XML into the JSON tree its JSON codec would have written, so
//! one reader ([`crate::decode`]) serves both.
//!
//! The mapping is the one Eureka's own JSON follows: an element with only
//! text becomes a string; attributes become `@name` keys; text beside
//! attributes becomes `$`; a repeated child becomes an array. So
//! `<port enabled="true">8080</port>` is `{"@enabled":"true","$":"8080"}`
//! and `<metadata class="java.util.Collections$EmptyMap"/>` is
//! `{"@class":"java.util.Collections$EmptyMap"}`, exactly as in JSON.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use serde_json::{Map, Value};

/// One open element.
struct Frame {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<(String, Value)>,
    text: String,
}

impl Frame {
    fn open(e: &BytesStart<'_>) -> Result<Frame, String> {
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|err| format!("XML attribute of <{name}>: {err}"))?;
            let key = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = a
                .unescape_value()
                .map_err(|err| format!("XML attribute {key} of <{name}>: {err}"))?;
            attrs.push((key, value.into_owned()));
        }
        Ok(Frame {
            name,
            attrs,
            children: Vec::new(),
            text: String::new(),
        })
    }

    fn close(self) -> (String, Value) {
        if self.children.is_empty() && self.attrs.is_empty() {
            return (self.name, Value::String(self.text));
        }
        let mut map = Map::new();
        for (k, v) in self.attrs {
            map.insert(format!("@{k}"), Value::String(v));
        }
        for (k, v) in self.children {
            match map.get_mut(&k) {
                Some(Value::Array(items)) if !k.starts_with('@') => items.push(v),
                Some(existing) => {
                    let first = existing.take();
                    *existing = Value::Array(vec![first, v]);
                }
                None => {
                    map.insert(k, v);
                }
            }
        }
        if !self.text.trim().is_empty() {
            map.insert("$".into(), Value::String(self.text));
        }
        (self.name, Value::Object(map))
    }
}

/// The document as `{"<root>": tree}`.
pub(crate) fn to_value(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("XML body is not UTF-8: {e}"))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(true);
    let mut stack: Vec<Frame> = Vec::new();
    let mut root: Option<(String, Value)> = None;
    loop {
        let at = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| format!("body is not XML (at byte {at}): {e}"))?;
        let done = match event {
            Event::Start(e) => {
                stack.push(Frame::open(&e)?);
                None
            }
            Event::Empty(e) => Some(Frame::open(&e)?.close()),
            Event::End(_) => stack.pop().map(Frame::close),
            Event::Text(t) => {
                let t = t
                    .unescape()
                    .map_err(|e| format!("XML text (at byte {at}): {e}"))?;
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t);
                }
                None
            }
            Event::CData(t) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&String::from_utf8_lossy(&t.into_inner()));
                }
                None
            }
            Event::Eof => break,
            _ => None,
        };
        if let Some(child) = done {
            match stack.last_mut() {
                Some(parent) => parent.children.push(child),
                None => root = Some(child),
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(format!("XML ends inside <{}>", open.name));
    }
    let (name, tree) = root.ok_or("the XML body has no element")?;
    let mut map = Map::new();
    map.insert(name, tree);
    Ok(Value::Object(map))
}
