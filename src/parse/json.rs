//! Generic JSON lines: pick fields by JSON Pointer (RFC 6901) in one pass.
//!
//! The pointers of a source are compiled into a tree; the line is walked once with serde, and
//! only the members on that tree are looked at. Everything else is skipped with `IgnoredAny`
//! (validated, never allocated), and picked strings borrow from the line unless they contain
//! escapes. That is what keeps parsing near memory speed on wide vendor records.

use super::{Field, Picked, Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A step of a pointer: an object member name (or array index), optionally with a filter that
/// picks the array element whose `key` equals `value` (`/target[type=AppUser]/alternateId`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    name: String,
    filter: Option<(String, String)>,
}

/// A compiled set of pointers.
#[derive(Debug, Default, Clone)]
pub struct Selector {
    root: Node,
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(Step, Node)>,
    /// Fields that take this node's value, with the priority of this pointer for the field.
    fields: Vec<(Field, u8)>,
    /// Set when a child uses a filter: the node is an array searched element by element.
    filtered: bool,
}

impl Node {
    fn child(&mut self, step: Step) -> &mut Node {
        let index = match self.children.iter().position(|(s, _)| *s == step) {
            Some(index) => index,
            None => {
                self.children.push((step, Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[index].1
    }
}

/// Why a pointer is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPointer(pub String);

impl Selector {
    /// Adds a pointer whose value goes to `field`.
    pub fn add(&mut self, pointer: &str, field: Field) -> Result<(), BadPointer> {
        self.add_at(pointer, field, 0)
    }

    /// Adds a pointer whose value goes to `field` at a priority (0 = first alternative).
    pub fn add_at(&mut self, pointer: &str, field: Field, priority: u8) -> Result<(), BadPointer> {
        if !pointer.starts_with('/') {
            return Err(BadPointer(format!(
                "{pointer:?} is not a JSON Pointer (it must start with '/', e.g. \"/published\")"
            )));
        }
        let mut node = &mut self.root;
        for raw in pointer[1..].split('/') {
            let step = parse_step(raw)?;
            // `name[key=value]` is two levels: the member `name` (an array, searched), then
            // the element that passes the filter.
            let filter = step.filter.clone();
            node = node.child(Step {
                name: step.name,
                filter: None,
            });
            if let Some(filter) = filter {
                node.filtered = true;
                node = node.child(Step {
                    name: String::new(),
                    filter: Some(filter),
                });
            }
        }
        node.fields.push((field, priority));
        Ok(())
    }

    /// Picks this selector's values out of one line. `Err` when the line is not a JSON object.
    pub fn pick<'a>(&self, line: &'a str, picked: &mut Picked<'a>) -> Result<(), String> {
        let trimmed = line.trim_start();
        if !trimmed.starts_with('{') {
            return Err("not a JSON object".into());
        }
        let mut deserializer = serde_json::Deserializer::from_str(line);
        NodeSeed {
            node: &self.root,
            picked,
        }
        .deserialize(&mut deserializer)
        .map_err(|e| e.to_string())?;
        deserializer.end().map_err(|e| e.to_string())
    }
}

fn unescape(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn parse_step(raw: &str) -> Result<Step, BadPointer> {
    if let Some(open) = raw.find('[') {
        if raw.ends_with(']') {
            let inner = &raw[open + 1..raw.len() - 1];
            let (key, value) = inner.split_once('=').ok_or_else(|| {
                BadPointer(format!("filter {raw:?} must look like name[key=value]"))
            })?;
            return Ok(Step {
                name: unescape(&raw[..open]),
                filter: Some((key.to_string(), value.to_string())),
            });
        }
    }
    Ok(Step {
        name: unescape(raw),
        filter: None,
    })
}

/// A string that borrows from the line when it has no escapes.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Turns the raw JSON text of a picked member into a [`Value`].
fn value_of_raw(raw: &str) -> Value<'_> {
    match raw.as_bytes().first() {
        // Raw values are valid JSON: a string without a backslash is its text between quotes.
        Some(b'"') if raw.len() >= 2 && memchr::memchr(b'\\', raw.as_bytes()).is_none() => {
            Value::Str(Cow::Borrowed(&raw[1..raw.len() - 1]))
        }
        Some(b'"') => match serde_json::from_str::<CowStr<'_>>(raw) {
            Ok(s) => Value::Str(s.0),
            Err(_) => Value::Null,
        },
        Some(b't') => Value::Bool(true),
        Some(b'f') => Value::Bool(false),
        Some(b'n') | None => Value::Null,
        Some(b'{' | b'[') => Value::Raw(raw),
        Some(_) => Value::Num(raw),
    }
}

struct NodeSeed<'n, 'p, 'a> {
    node: &'n Node,
    picked: &'p mut Picked<'a>,
}

impl<'de, 'n, 'p> DeserializeSeed<'de> for NodeSeed<'n, 'p, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.node.fields.is_empty() && !self.node.filtered {
            return deserializer.deserialize_any(NodeVisitor {
                node: self.node,
                picked: self.picked,
            });
        }
        // The node's own value is wanted (or its array must be searched): keep it raw.
        let raw: &'de RawValue = serde::Deserialize::deserialize(deserializer)?;
        let text = raw.get();
        for &(field, priority) in &self.node.fields {
            self.picked.set_at(field, priority, value_of_raw(text));
        }
        if !self.node.children.is_empty() && matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
            let mut inner = serde_json::Deserializer::from_str(text);
            NodeVisitor {
                node: self.node,
                picked: self.picked,
            }
            .walk(&mut inner)
            .map_err(de::Error::custom)?;
        }
        Ok(())
    }
}

struct NodeVisitor<'n, 'p, 'a> {
    node: &'n Node,
    picked: &'p mut Picked<'a>,
}

impl<'n, 'p, 'de> NodeVisitor<'n, 'p, 'de> {
    fn walk(
        self,
        deserializer: &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    ) -> Result<(), serde_json::Error> {
        if self.node.filtered {
            // Search the array: each element is matched against every filtered child.
            let elements: Vec<&'de RawValue> = serde::Deserialize::deserialize(&mut *deserializer)
                .or_else(|_| Ok::<_, serde_json::Error>(Vec::new()))?;
            for element in elements {
                for (step, child) in &self.node.children {
                    let Some((key, wanted)) = &step.filter else {
                        continue;
                    };
                    let text = element.get();
                    let matches =
                        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(text)
                            .ok()
                            .and_then(|object| {
                                object
                                    .get(key.as_str())
                                    .and_then(|v| v.as_str().map(|s| s == wanted))
                            })
                            .unwrap_or(false);
                    if matches {
                        let mut inner = serde_json::Deserializer::from_str(text);
                        NodeSeed {
                            node: child,
                            picked: self.picked,
                        }
                        .deserialize(&mut inner)?;
                    }
                }
            }
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'n, 'p, 'de> Visitor<'de> for NodeVisitor<'n, 'p, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<CowStr<'de>>()? {
            let child = self
                .node
                .children
                .iter()
                .find(|(step, _)| step.filter.is_none() && step.name == key.0);
            match child {
                Some((_, child)) => map.next_value_seed(NodeSeed {
                    node: child,
                    picked: self.picked,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let child =
                self.node.children.iter().find(|(step, _)| {
                    step.filter.is_none() && step.name.parse::<usize>() == Ok(index)
                });
            let more = match child {
                Some((_, child)) => seq
                    .next_element_seed(NodeSeed {
                        node: child,
                        picked: self.picked,
                    })?
                    .is_some(),
                None => seq.next_element::<IgnoredAny>()?.is_some(),
            };
            if !more {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick<'a>(pointers: &[(&str, Field)], line: &'a str) -> Picked<'a> {
        let mut selector = Selector::default();
        for (pointer, field) in pointers {
            selector.add(pointer, *field).unwrap();
        }
        let mut picked = Picked::default();
        selector.pick(line, &mut picked).unwrap();
        picked
    }

    #[test]
    fn nested_pointers_pick_strings_numbers_and_raw_objects() {
        let line = r#"{"a":{"b":"x","skip":[1,2,{"c":3}]},"n":12.5,"o":{"k":[1]},"t":true}"#;
        let picked = pick(
            &[
                ("/a/b", Field::Action),
                ("/n", Field::Status),
                ("/o", Field::Body),
                ("/t", Field::Error),
            ],
            line,
        );
        assert_eq!(
            picked.get(Field::Action),
            Some(&Value::Str(Cow::Borrowed("x")))
        );
        assert_eq!(picked.get(Field::Status), Some(&Value::Num("12.5")));
        assert_eq!(picked.get(Field::Body), Some(&Value::Raw(r#"{"k":[1]}"#)));
        assert_eq!(picked.get(Field::Error), Some(&Value::Bool(true)));
    }

    #[test]
    fn array_indices_and_escaped_names_work() {
        let line = r#"{"list":["zero","one"],"a/b":"slash","e":"tab\there"}"#;
        let picked = pick(
            &[
                ("/list/1", Field::Action),
                ("/a~1b", Field::App),
                ("/e", Field::Error),
            ],
            line,
        );
        assert_eq!(
            picked.get(Field::Action),
            Some(&Value::Str(Cow::Borrowed("one")))
        );
        assert_eq!(
            picked.get(Field::App),
            Some(&Value::Str(Cow::Borrowed("slash")))
        );
        assert_eq!(
            picked.get(Field::Error),
            Some(&Value::Str(Cow::Owned("tab\there".into())))
        );
    }

    #[test]
    fn filters_pick_the_array_element_by_type() {
        let line = r#"{"target":[{"type":"AppInstance","alternateId":"Acme"},{"type":"AppUser","alternateId":"rita@corp.example"}]}"#;
        let picked = pick(
            &[
                ("/target[type=AppUser]/alternateId", Field::UserLogin),
                ("/target[type=AppInstance]/alternateId", Field::App),
            ],
            line,
        );
        assert_eq!(picked.text(Field::UserLogin), Some("rita@corp.example"));
        assert_eq!(picked.text(Field::App), Some("Acme"));
    }

    #[test]
    fn non_objects_and_trailing_garbage_are_errors() {
        let mut selector = Selector::default();
        selector.add("/a", Field::Action).unwrap();
        for bad in ["[1,2]", "\"s\"", "{\"a\":1} x", "{\"a\":", "\u{0}\u{1}"] {
            let mut picked = Picked::default();
            assert!(selector.pick(bad, &mut picked).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn pointers_must_start_with_a_slash() {
        assert!(Selector::default().add("published", Field::Time).is_err());
    }
}
