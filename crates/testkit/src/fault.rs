//! Fault injection shared by the emulators: a queue of misbehaviours that the next answers take,
//! one fault per request, so client retry, timeout and parsing paths can be tested on purpose.

use std::collections::VecDeque;
use std::time::Duration;

/// One misbehaviour for one request. Queue them with `inject`; each request takes the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// `429 Too Many Requests`, with `Retry-After: <seconds>` when given, and the service's
    /// throttling error body.
    TooManyRequests {
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: Option<u64>,
    },
    /// A server error with this status (500, 502, 503, 504...) and the service's error body.
    ServerError {
        /// The HTTP status code.
        status: u16,
    },
    /// Wait this long, then answer normally (for client timeouts).
    Delay(Duration),
    /// `200 OK` with a body that is not JSON.
    MalformedBody,
    /// Token endpoints (Entra's and the managed identity ones): `200 OK` with their usual success
    /// body but an empty `access_token`. Other endpoints answer normally.
    EmptyAccessToken,
    /// Token endpoints: a well-formed Entra error with this status, OAuth `error` and AADSTS code
    /// (e.g. 400 `invalid_request` 70021 right after a federated credential was created).
    /// Other endpoints answer with the same status and a service-shaped error.
    EntraError {
        /// The HTTP status code.
        status: u16,
        /// The OAuth `error` value, e.g. `temporarily_unavailable`.
        error: String,
        /// The AADSTS number.
        code: u32,
        /// The text after `AADSTSnnnn: `.
        message: String,
    },
    /// Exactly this status, content type and body.
    Custom {
        /// The HTTP status code.
        status: u16,
        /// The `Content-Type` header.
        content_type: String,
        /// The body, verbatim.
        body: String,
    },
    /// Close the connection without answering.
    DropConnection,
}

/// The queue itself; emulators keep one behind their state lock.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    queue: VecDeque<Fault>,
}

impl FaultQueue {
    pub(crate) fn push(&mut self, fault: Fault, times: usize) {
        self.queue.extend(std::iter::repeat_n(fault, times));
    }

    pub(crate) fn next(&mut self) -> Option<Fault> {
        self.queue.pop_front()
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.len()
    }
}
