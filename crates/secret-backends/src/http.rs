//! What the HTTP clients we build for the SDKs share: where a redirect may go, and how much of
//! an answer is read.
//!
//! - Redirects: a request carries a credential (`X-Vault-Token`, a bearer token) and often a
//!   value (a PUT of the access token). reqwest strips only `Authorization`, `Cookie` and
//!   `Proxy-Authorization` on a cross-host redirect and re-sends a 307/308 body anywhere, so
//!   [`same_origin_redirects`] follows a redirect only to the same scheme, host and port, and
//!   refuses any other with [`RedirectRefused`], which names where it pointed.
//! - Bodies: [`read_capped`] reads an answer up to a limit and fails with [`BodyTooLarge`]
//!   beyond it, without holding more than the limit.

use std::fmt;

/// How many same-origin redirects one request may follow.
const MAX_SAME_ORIGIN_REDIRECTS: usize = 3;

/// The most a backend reads of one answer it reads itself (1 MiB: Key Vault values are at
/// most 25 KB, Vault's mount and error answers a few hundred bytes).
pub(crate) const MAX_ANSWER_BYTES: usize = 1 << 20;

/// A redirect that would have left the origin the request was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedirectRefused {
    /// The origin (`scheme://host:port`) the redirect pointed at; never its path or query.
    pub(crate) to: String,
}

impl fmt::Display for RedirectRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refused to follow a redirect to {}, another origin, with the request's credentials",
            self.to
        )
    }
}

impl std::error::Error for RedirectRefused {}

/// An answer larger than the limit; reading stopped there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyTooLarge {
    pub(crate) limit: usize,
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the answer is larger than {} KiB, so it was not read",
            self.limit / 1024
        )
    }
}

impl std::error::Error for BodyTooLarge {}

/// The redirect policy of every reqwest client this crate builds: up to
/// [`MAX_SAME_ORIGIN_REDIRECTS`] redirects within the origin of the first request, none
/// anywhere else (the request fails with [`RedirectRefused`]).
pub(crate) fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let next = attempt.url().origin();
        let same = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == next);
        if !same {
            let to = next.ascii_serialization();
            return attempt.error(RedirectRefused { to });
        }
        if attempt.previous().len() > MAX_SAME_ORIGIN_REDIRECTS {
            return attempt.stop();
        }
        attempt.follow()
    })
}

/// The first error of type `T` in `err`'s cause chain (I/O errors' inner errors included).
pub(crate) fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(err);
    while let Some(err) = next {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(inner) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| find_cause::<T>(inner))
        {
            return Some(inner);
        }
        next = err.source();
    }
    None
}

/// Why [`read_capped`] failed.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The body is larger than the limit.
    TooLarge(BodyTooLarge),
    /// The transport failed while reading.
    Transport(reqwest::Error),
}

/// The body of `response`, at most `limit` bytes: a `Content-Length` over the limit is refused
/// before reading, a body that grows past it is dropped as soon as it does.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, ReadError> {
    let too_large = ReadError::TooLarge(BodyTooLarge { limit });
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(too_large);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Transport)? {
        if body.len() + chunk.len() > limit {
            return Err(too_large);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
