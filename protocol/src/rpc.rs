//! The JSON-RPC 2.0 envelope: every frame pii, the preload and the agent exchange is a
//! [`Message`]. Nothing outside this module writes or parses the envelope by hand.
//!
//! - [`Message::parse`] / [`Message::from_frame`] read one frame (a line, or a binary frame) and
//!   classify what is wrong with a bad one as JSON-RPC does ([`Invalid`]: parse error or invalid
//!   request, with the id when it could be read), so every end answers bad input alike.
//! - [`Message::to_frame`] writes one (`\n`-terminated, or a binary frame), refusing one over the
//!   frame cap.
//! - Typed constructors and accessors tie the envelope to the method types: [`Request::new`]
//!   takes a [`Method`]'s params, [`Response::result`] parses its result, [`Notification::new`]
//!   and [`Notification::item`] build a notification or a subscription item.
//!
//! Ids are kept as their raw JSON text ([`Id`]): pii rewrites them and must give each client its
//! own id back byte for byte, whatever number or string it chose (`1.5e300` included).
//!
//! Why not `jsonrpsee-types` (which defines Request, Response, Notification and ErrorObject with
//! the same wire shape): its `Id` is null, a `u64` or a string, so an id such as `1.5e300` or
//! `-1` cannot be echoed; its subscription payload has no room for the session's `seq`; and the
//! binary frame is no JSON-RPC at all. The error object is the same shape as its
//! `ErrorObjectOwned` (code, message, optional data), typed here with [`ErrorCode`] and [`Errno`].

use crate::frame::{Frame, FrameError};
use crate::{Errno, ErrorCode, Method, Subscription};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

const VERSION: &str = "2.0";

/// A request id: a JSON number or string (or `null` in an error answering an unreadable
/// request), kept as its raw text.
#[derive(Debug, Clone)]
pub struct Id(Box<RawValue>);

impl Id {
    /// A numeric id.
    pub fn num(n: u64) -> Id {
        Id(RawValue::from_string(n.to_string()).expect("a number is JSON"))
    }

    /// `null`: the id of an error answering a request whose id could not be read.
    pub fn null() -> Id {
        Id(RawValue::from_string("null".into()).expect("null is JSON"))
    }

    /// An id from raw JSON: only a number or a string is one.
    pub fn from_raw(raw: Box<RawValue>) -> Option<Id> {
        let t = raw.get();
        (t.starts_with('"') || t.starts_with(|c: char| c == '-' || c.is_ascii_digit()))
            .then_some(Id(raw))
    }

    /// The id as a `u64`, if it is one (pii's own ids are).
    pub fn as_u64(&self) -> Option<u64> {
        self.0.get().parse().ok()
    }

    /// The raw JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for Id {
    fn eq(&self, other: &Id) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Id {}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// A JSON-RPC error object: `{code, message, data?}`. OS errors carry an [`Errno`] as `data`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorObject {
    pub code: i32,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
}

impl ErrorObject {
    /// An error with one of pi-bridge's codes and no data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorObject {
            code: code.code(),
            message: message.into(),
            data: None,
        }
    }

    /// An OS error: code [`ErrorCode::Os`], Node's message, the [`Errno`] as data.
    pub fn os(e: &Errno) -> Self {
        ErrorObject {
            code: ErrorCode::Os.code(),
            message: e.message(),
            data: serde_json::value::to_raw_value(e).ok(),
        }
    }

    /// The [`Errno`] of an OS error.
    pub fn errno(&self) -> Option<Errno> {
        if self.code != ErrorCode::Os.code() {
            return None;
        }
        serde_json::from_str(self.data.as_ref()?.get()).ok()
    }

    /// Whether the code is `code`.
    pub fn is(&self, code: ErrorCode) -> bool {
        self.code == code.code()
    }
}

impl PartialEq for ErrorObject {
    fn eq(&self, o: &ErrorObject) -> bool {
        self.code == o.code
            && self.message == o.message
            && self.data.as_ref().map(|d| d.get()) == o.data.as_ref().map(|d| d.get())
    }
}

impl std::fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for ErrorObject {}

impl From<Errno> for ErrorObject {
    fn from(e: Errno) -> Self {
        ErrorObject::os(&e)
    }
}

/// A call: answered by a [`Response`] with the same id.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Id,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

impl Request {
    /// A call of method `M`.
    pub fn new<M: Method>(id: Id, params: &M::Params) -> Self {
        Request {
            id,
            method: M::NAME.to_string(),
            params: Some(to_raw(params)),
        }
    }

    /// A call of `method` with params as they are (pii forwarding a client's call).
    pub fn raw(id: Id, method: impl Into<String>, params: Option<Box<RawValue>>) -> Self {
        Request {
            id,
            method: method.into(),
            params,
        }
    }

    /// The params as `P` (absent params read as `null`); a mismatch is `InvalidParams`.
    pub fn params<P: DeserializeOwned>(&self) -> Result<P, ErrorObject> {
        parse_params(self.params.as_deref())
    }
}

/// `params` (absent: `null`) as `P`; a mismatch is `InvalidParams`.
pub fn parse_params<P: DeserializeOwned>(params: Option<&RawValue>) -> Result<P, ErrorObject> {
    serde_json::from_str(params.map_or("null", RawValue::get))
        .map_err(|e| ErrorObject::new(ErrorCode::InvalidParams, format!("invalid params: {e}")))
}

/// The answer to a [`Request`].
#[derive(Debug, Clone)]
pub struct Response {
    pub id: Id,
    pub result: Result<Box<RawValue>, ErrorObject>,
}

impl Response {
    /// A success: `result` serialized.
    pub fn ok<T: Serialize + ?Sized>(id: Id, result: &T) -> Self {
        match serde_json::value::to_raw_value(result) {
            Ok(r) => Response { id, result: Ok(r) },
            Err(e) => Response::err(
                id,
                ErrorObject {
                    code: -32603,
                    message: format!("cannot serialize the result: {e}"),
                    data: None,
                },
            ),
        }
    }

    /// A failure.
    pub fn err(id: Id, error: ErrorObject) -> Self {
        Response {
            id,
            result: Err(error),
        }
    }

    /// The result as method `M`'s; an error answer as it is, a result of the wrong shape as
    /// `InvalidRequest` ("unexpected answer").
    pub fn result<M: Method>(&self) -> Result<M::Result, ErrorObject> {
        parse_result::<M::Result>(M::NAME, &self.result)
    }
}

/// A result (or error) as `T`, for method `name`.
pub fn parse_result<T: DeserializeOwned>(
    name: &str,
    result: &Result<Box<RawValue>, ErrorObject>,
) -> Result<T, ErrorObject> {
    match result {
        Ok(r) => serde_json::from_str(r.get()).map_err(|e| {
            ErrorObject::new(
                ErrorCode::InvalidRequest,
                format!("unexpected answer to `{name}`: {e}"),
            )
        }),
        Err(e) => Err(e.clone()),
    }
}

/// A message without an id: nobody answers it.
#[derive(Debug, Clone)]
pub struct Notification {
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

impl Notification {
    /// A notification of method `M` (e.g. `session.ack`).
    pub fn new<M: Method>(params: &M::Params) -> Self {
        Notification {
            method: M::NAME.to_string(),
            params: Some(to_raw(params)),
        }
    }

    /// An item of subscription `S` (`params: {subscription, result}`; the agent's output adds
    /// the session's `seq`, see [`crate::session`]).
    pub fn item<S: Subscription>(subscription: &SubscriptionId, item: &S::Item) -> Self {
        Notification::item_raw(S::NOTIFICATION, subscription, &to_raw(item))
    }

    /// An item whose body is already JSON.
    pub fn item_raw(method: &str, subscription: &SubscriptionId, result: &RawValue) -> Self {
        let params = format!(
            "{{\"subscription\":{},\"result\":{}}}",
            subscription.0.get(),
            result.get()
        );
        Notification {
            method: method.to_string(),
            params: Some(RawValue::from_string(params).expect("both parts are JSON")),
        }
    }

    /// The subscription item this notification carries, if it is one.
    pub fn subscription(&self) -> Option<SubscriptionItem<'_>> {
        serde_json::from_str(self.params.as_ref()?.get()).ok()
    }
}

/// The params of a subscription's notification.
#[derive(Debug, Deserialize)]
pub struct SubscriptionItem<'a> {
    #[serde(borrow)]
    pub subscription: &'a RawValue,
    #[serde(default, borrow)]
    pub result: Option<&'a RawValue>,
    /// The session-wide sequence number (see [`crate::session`]).
    #[serde(default)]
    pub seq: Option<u64>,
}

impl SubscriptionItem<'_> {
    /// The item's `type` (`spawned`, `exit`, `error`, `paths` …), if it has one.
    pub fn item_type(&self) -> Option<String> {
        #[derive(Deserialize)]
        struct T {
            #[serde(rename = "type")]
            ty: String,
        }
        serde_json::from_str::<T>(self.result?.get())
            .ok()
            .map(|t| t.ty)
    }
}

/// A subscription id: what a subscribe call answers and every item names (a number or a string
/// on the wire; the agent hands out numbers).
#[derive(Debug, Clone)]
pub struct SubscriptionId(Box<RawValue>);

impl SubscriptionId {
    pub fn num(n: u64) -> Self {
        SubscriptionId(RawValue::from_string(n.to_string()).expect("a number is JSON"))
    }

    /// From raw JSON: a number or a string.
    pub fn from_raw(raw: &RawValue) -> Option<Self> {
        match serde_json::from_str::<serde_json::Value>(raw.get()).ok()? {
            v @ (serde_json::Value::String(_) | serde_json::Value::Number(_)) => Some(
                SubscriptionId(RawValue::from_string(v.to_string()).expect("a value is JSON")),
            ),
            _ => None,
        }
    }

    /// The canonical text (a number's or a string's JSON): equal ids have equal keys.
    pub fn key(&self) -> &str {
        self.0.get()
    }

    /// The id an unsubscribe call names: `[id]` or `{"subscription": id}`.
    pub fn of_unsubscribe(params: Option<&RawValue>) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(params?.get()).ok()?;
        let id = match v {
            serde_json::Value::Array(a) if a.len() == 1 => a.into_iter().next()?,
            serde_json::Value::Object(mut o) if o.len() == 1 => o.remove("subscription")?,
            _ => return None,
        };
        SubscriptionId::from_raw(&to_raw(&id))
    }
}

impl PartialEq for SubscriptionId {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}

impl Eq for SubscriptionId {}

impl std::hash::Hash for SubscriptionId {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.key().hash(h)
    }
}

impl Serialize for SubscriptionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// One frame.
#[derive(Debug, Clone)]
pub enum Message {
    Request(Request),
    Response(Response),
    Notification(Notification),
    /// A response whose bulk data travels raw after it (see [`crate::frame`]): agent → pii →
    /// client only, always a success.
    Binary {
        response: Response,
        payload: Vec<u8>,
    },
}

/// Why a frame is not a message, as JSON-RPC reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    /// [`ErrorCode::ParseError`] (not JSON) or [`ErrorCode::InvalidRequest`].
    pub code: ErrorCode,
    /// The id, when one could be read (the answer carries it).
    pub id: Option<Id>,
    pub message: String,
}

impl Invalid {
    fn parse(e: impl std::fmt::Display) -> Self {
        Invalid {
            code: ErrorCode::ParseError,
            id: None,
            message: format!("parse error: {e}"),
        }
    }

    fn request(id: Option<Id>, message: impl Into<String>) -> Self {
        Invalid {
            code: ErrorCode::InvalidRequest,
            id,
            message: message.into(),
        }
    }

    /// The error answer to the bad frame.
    pub fn response(&self) -> Response {
        Response::err(
            self.id.clone().unwrap_or_else(Id::null),
            ErrorObject::new(self.code, self.message.clone()),
        )
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A member that is present (`null` included) is `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// The members of any message, as read.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    jsonrpc: Option<&'a str>,
    #[serde(default, deserialize_with = "present")]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, deserialize_with = "present")]
    params: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

impl Message {
    /// Read one text frame (not a blank heartbeat line).
    pub fn parse(text: &str) -> Result<Message, Invalid> {
        if text.trim_start().starts_with('[') {
            return Err(match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Ok(_) => Invalid::request(None, "batch requests are not supported"),
                Err(e) => Invalid::parse(e),
            });
        }
        let env: Envelope = serde_json::from_str(text).map_err(|e| match e.classify() {
            serde_json::error::Category::Data => {
                Invalid::request(None, format!("invalid request: {e}"))
            }
            _ => Invalid::parse(e),
        })?;
        // `"id": null` is no id (JSON-RPC: a request with a null id is not answered as one).
        let id = match env.id {
            Some(raw) if raw.get() == "null" => None,
            Some(raw) => Some(
                Id::from_raw(raw)
                    .ok_or_else(|| Invalid::request(None, "the id must be a number or a string"))?,
            ),
            None => None,
        };
        if env.jsonrpc != Some(VERSION) {
            return Err(Invalid::request(id, "not a JSON-RPC 2.0 message"));
        }
        match (env.method, id) {
            (Some(method), Some(id)) => Ok(Message::Request(Request {
                id,
                method,
                params: env.params,
            })),
            (Some(method), None) => Ok(Message::Notification(Notification {
                method,
                params: env.params,
            })),
            (None, id) => match (env.error, env.result) {
                (Some(e), _) => Ok(Message::Response(Response::err(
                    id.unwrap_or_else(Id::null),
                    e,
                ))),
                (None, Some(r)) => match id {
                    Some(id) => Ok(Message::Response(Response { id, result: Ok(r) })),
                    None => Err(Invalid::request(None, "a result without an id")),
                },
                (None, None) => Err(Invalid::request(id, "neither a method nor a result")),
            },
        }
    }

    /// Read one frame of [`crate::FrameReader::next_item`] (a blank line is `Ok(None)`).
    pub fn from_frame(frame: Frame) -> Result<Option<Message>, Invalid> {
        match frame {
            Frame::Text(t) if t.trim().is_empty() => Ok(None),
            Frame::Text(t) => Message::parse(&t).map(Some),
            Frame::Binary { header, payload } => match Message::parse(&header)? {
                Message::Response(r @ Response { result: Ok(_), .. }) => {
                    Ok(Some(Message::Binary {
                        response: r,
                        payload,
                    }))
                }
                _ => Err(Invalid::request(
                    None,
                    "a binary frame that is not a result",
                )),
            },
        }
    }

    /// The frame's JSON (a binary frame's header), without the newline.
    pub fn to_json(&self) -> String {
        let (id, method, params, result, error): Wire = match self {
            Message::Request(r) => (
                Some(&r.id),
                Some(&r.method),
                r.params.as_deref(),
                None,
                None,
            ),
            Message::Notification(n) => (None, Some(&n.method), n.params.as_deref(), None, None),
            Message::Response(r) | Message::Binary { response: r, .. } => match &r.result {
                Ok(v) => (Some(&r.id), None, None, Some(&**v), None),
                Err(e) => (Some(&r.id), None, None, None, Some(e)),
            },
        };
        let out = Out {
            jsonrpc: VERSION,
            id,
            method,
            params,
            result,
            error,
        };
        serde_json::to_string(&out).expect("raw values and strings always serialize")
    }

    /// The frame on the wire: JSON and `\n`, or a binary frame. Refuses one over the caps.
    pub fn to_frame(&self) -> Result<Vec<u8>, FrameError> {
        match self {
            Message::Binary { payload, .. } => {
                crate::frame::encode_binary(&self.to_json(), payload)
            }
            _ => crate::frame::encode(&self.to_json()),
        }
    }
}

type Wire<'a> = (
    Option<&'a Id>,
    Option<&'a String>,
    Option<&'a RawValue>,
    Option<&'a RawValue>,
    Option<&'a ErrorObject>,
);

#[derive(Serialize)]
struct Out<'a> {
    jsonrpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    params: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorObject>,
}

impl From<Request> for Message {
    fn from(r: Request) -> Self {
        Message::Request(r)
    }
}

impl From<Response> for Message {
    fn from(r: Response) -> Self {
        Message::Response(r)
    }
}

impl From<Notification> for Message {
    fn from(n: Notification) -> Self {
        Message::Notification(n)
    }
}

fn to_raw<T: Serialize + ?Sized>(v: &T) -> Box<RawValue> {
    // Every protocol type serializes (no maps with non-string keys, no failing impls).
    serde_json::value::to_raw_value(v).expect("protocol types serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::methods::{Changes, ReadDir, SessionAck, Stat};

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.into()).unwrap()
    }

    /// Write, check the JSON text, read back, write again: the same bytes.
    fn round_trip(m: Message, json: &str) -> Message {
        let text = m.to_json();
        assert_eq!(text, json);
        let frame = m.to_frame().unwrap();
        assert_eq!(frame, format!("{json}\n").into_bytes());
        let back = Message::parse(&text).unwrap();
        assert_eq!(back.to_json(), json);
        back
    }

    #[test]
    fn request_round_trip_typed() {
        let p = crate::fs::StatParams {
            path: "/p/x".into(),
            lstat: true,
        };
        let back = round_trip(
            Request::new::<Stat>(Id::num(7), &p).into(),
            r#"{"jsonrpc":"2.0","id":7,"method":"fs.stat","params":{"path":"/p/x","lstat":true}}"#,
        );
        let Message::Request(r) = back else {
            panic!("{back:?}")
        };
        assert_eq!(r.id.as_u64(), Some(7));
        assert_eq!(r.params::<crate::fs::StatParams>().unwrap(), p);
        let bad = Request::raw(Id::num(1), "fs.stat", Some(raw(r#"{"path":5}"#)));
        let e = bad.params::<crate::fs::StatParams>().unwrap_err();
        assert!(e.is(ErrorCode::InvalidParams), "{e:?}");
        // No params at all: read as null.
        let r = Request::raw(Id::num(2), "session.end", None);
        assert_eq!(
            Message::from(r.clone()).to_json(),
            r#"{"jsonrpc":"2.0","id":2,"method":"session.end"}"#
        );
        r.params::<crate::Empty>().unwrap();
    }

    #[test]
    fn ids_are_echoed_byte_for_byte() {
        for id in ["\"abc\"", "-1", "1.5e300", "123456789012345678901234567890"] {
            let text = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m"}}"#);
            let Message::Request(r) = Message::parse(&text).unwrap() else {
                panic!()
            };
            assert_eq!(r.id.get(), id);
            let resp = Message::from(Response::ok(r.id, &true)).to_json();
            assert_eq!(
                resp,
                format!(r#"{{"jsonrpc":"2.0","id":{id},"result":true}}"#)
            );
        }
    }

    #[test]
    fn response_round_trip_result_and_errors() {
        let entries = crate::fs::ReadDirResult {
            entries: vec![crate::fs::DirEntry {
                name: "a".into(),
                kind: crate::fs::FileKind::File,
            }],
            cache: true,
        };
        let m = Message::from(Response::ok(Id::num(3), &entries));
        let back = Message::parse(&m.to_json()).unwrap();
        let Message::Response(r) = back else { panic!() };
        assert_eq!(r.result::<ReadDir>().unwrap(), entries);
        // `"result": null` is a result (session.end answers it), not a missing one.
        let back = round_trip(
            Response::ok(Id::num(4), &crate::Empty).into(),
            r#"{"jsonrpc":"2.0","id":4,"result":null}"#,
        );
        let Message::Response(r) = back else { panic!() };
        r.result::<crate::methods::SessionEnd>().unwrap();
        // An OS error: the errno comes back typed.
        let errno = Errno::new("ENOENT", "stat", Some("/p/x"));
        let back = round_trip(
            Response::err(Id::num(5), ErrorObject::os(&errno)).into(),
            r#"{"jsonrpc":"2.0","id":5,"error":{"code":-32000,"message":"ENOENT: no such file or directory, stat '/p/x'","data":{"code":"ENOENT","syscall":"stat","path":"/p/x"}}}"#,
        );
        let Message::Response(r) = back else { panic!() };
        let e = r.result::<Stat>().unwrap_err();
        assert_eq!(e.errno(), Some(errno));
        // A protocol error, and an error answering an unreadable request (null id).
        round_trip(
            Response::err(Id::null(), ErrorObject::new(ErrorCode::ParseError, "bad")).into(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad"}}"#,
        );
        // A result of the wrong shape is an error, not a panic.
        let r = Response::ok(Id::num(6), &"text");
        assert!(r
            .result::<Stat>()
            .unwrap_err()
            .is(ErrorCode::InvalidRequest));
    }

    #[test]
    fn notification_round_trip_and_subscription_items() {
        round_trip(
            Notification::new::<SessionAck>(&crate::session::AckParams { seq: 9 }).into(),
            r#"{"jsonrpc":"2.0","method":"session.ack","params":{"seq":9}}"#,
        );
        let item = crate::watch::Change::Paths {
            paths: vec!["/p/a".into()],
        };
        let back = round_trip(
            Notification::item::<Changes>(&SubscriptionId::num(12), &item).into(),
            r#"{"jsonrpc":"2.0","method":"fs.changed","params":{"subscription":12,"result":{"type":"paths","paths":["/p/a"]}}}"#,
        );
        let Message::Notification(n) = back else {
            panic!()
        };
        let s = n.subscription().unwrap();
        assert_eq!(s.subscription.get(), "12");
        assert_eq!(s.item_type().as_deref(), Some("paths"));
        assert_eq!(s.seq, None);
        // With the agent's seq spliced in.
        let with = crate::session::with_seq(&Message::from(n.clone()).to_json(), 4).unwrap();
        let Message::Notification(n) = Message::parse(&with).unwrap() else {
            panic!()
        };
        assert_eq!(n.subscription().unwrap().seq, Some(4));
    }

    #[test]
    fn binary_frames_are_first_class() {
        let payload: Vec<u8> = (0..=255u8).chain([b'\n', 0x1e]).collect();
        let m = Message::Binary {
            response: Response::ok(
                Id::num(8),
                &crate::fs::RawReadResult {
                    size: 258,
                    cache: false,
                },
            ),
            payload: payload.clone(),
        };
        let bytes = m.to_frame().unwrap();
        let (len, header) = crate::frame::parse_binary_header(
            &bytes[..bytes.iter().position(|&b| b == b'\n').unwrap()],
        )
        .unwrap();
        assert_eq!(len, payload.len());
        assert_eq!(header, r#"{"jsonrpc":"2.0","id":8,"result":{"size":258}}"#);
        let back = Message::from_frame(Frame::Binary {
            header: header.into(),
            payload: payload.clone(),
        })
        .unwrap()
        .unwrap();
        let Message::Binary {
            response,
            payload: p,
        } = back
        else {
            panic!()
        };
        assert_eq!(p, payload);
        assert_eq!(response.id.as_u64(), Some(8));
        // Only a success travels as a binary frame.
        let err = Message::from(Response::err(
            Id::num(1),
            ErrorObject::new(ErrorCode::Os, "x"),
        ));
        assert!(Message::from_frame(Frame::Binary {
            header: err.to_json(),
            payload: vec![]
        })
        .is_err());
        assert!(matches!(
            Message::from_frame(Frame::Text(" ".into())),
            Ok(None)
        ));
    }

    #[test]
    fn bad_frames_are_classified_as_json_rpc_does() {
        let cases: &[(&str, ErrorCode, Option<&str>)] = &[
            ("{not json", ErrorCode::ParseError, None),
            (
                "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"m\"}]",
                ErrorCode::InvalidRequest,
                None,
            ),
            ("[1,", ErrorCode::ParseError, None),
            ("1", ErrorCode::InvalidRequest, None),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":5}",
                ErrorCode::InvalidRequest,
                None,
            ),
            (
                "{\"id\":3,\"method\":\"m\"}",
                ErrorCode::InvalidRequest,
                Some("3"),
            ),
            (
                "{\"jsonrpc\":\"1.0\",\"id\":\"x\",\"method\":\"m\"}",
                ErrorCode::InvalidRequest,
                Some("\"x\""),
            ),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"m\"}",
                ErrorCode::InvalidRequest,
                None,
            ),
            (
                "{\"jsonrpc\":\"2.0\",\"id\":1}",
                ErrorCode::InvalidRequest,
                Some("1"),
            ),
            (
                "{\"jsonrpc\":\"2.0\",\"result\":1}",
                ErrorCode::InvalidRequest,
                None,
            ),
        ];
        for (text, code, id) in cases {
            let e = Message::parse(text).unwrap_err();
            assert_eq!(e.code, *code, "{text}: {e:?}");
            assert_eq!(e.id.as_ref().map(Id::get), *id, "{text}");
            let answer = Message::from(e.response()).to_json();
            assert!(
                answer.contains(&format!("\"code\":{}", code.code())),
                "{answer}"
            );
        }
        // A notification (no id, or a null one).
        for text in [
            r#"{"jsonrpc":"2.0","method":"session.ack","params":{"seq":1}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        ] {
            assert!(
                matches!(Message::parse(text), Ok(Message::Notification(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn unsubscribe_params_name_one_subscription() {
        let id =
            |s: &str| SubscriptionId::of_unsubscribe(Some(&raw(s))).map(|i| i.key().to_string());
        assert_eq!(id("[5]").as_deref(), Some("5"));
        assert_eq!(id(r#"{"subscription":"a"}"#).as_deref(), Some("\"a\""));
        assert_eq!(id("[]"), None);
        assert_eq!(id("[1,2]"), None);
        assert_eq!(id("[{}]"), None);
        assert_eq!(SubscriptionId::of_unsubscribe(None), None);
    }
}
