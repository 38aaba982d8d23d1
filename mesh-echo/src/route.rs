//! What a request path asks for, decided without I/O.

use std::time::Duration;

use http::StatusCode;

/// Longest honoured delay, so a typo cannot park a connection for hours.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// The behaviour selected by the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Plain echo with 200.
    Echo,
    /// `/status/CODE`: answer with that status.
    Status(StatusCode),
    /// `/delay/MS`: answer 200 after that long.
    Delay(Duration),
    /// `/status/` or `/delay/` with an argument that does not parse.
    BadRequest,
}

/// Decides the action from the path (without the query string).
pub fn action(path: &str) -> Action {
    if let Some(code) = path.strip_prefix("/status/") {
        return code
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .and_then(|c| StatusCode::from_u16(c).ok())
            .map_or(Action::BadRequest, Action::Status);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        return ms.parse::<u64>().map_or(Action::BadRequest, |ms| {
            Action::Delay(Duration::from_millis(ms).min(MAX_DELAY))
        });
    }
    Action::Echo
}

/// The status to answer with: a broken replica overrides whatever the path asked for.
pub fn status(action: Action, fail_status: Option<u16>) -> StatusCode {
    if let Some(code) = fail_status {
        // An out-of-range code is a misconfiguration; still answer as a broken replica.
        return StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    }
    match action {
        Action::Status(code) => code,
        Action::BadRequest => StatusCode::BAD_REQUEST,
        Action::Echo | Action::Delay(_) => StatusCode::OK,
    }
}

/// Statuses whose responses must not carry a body.
pub fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_echo() {
        assert_eq!(action("/"), Action::Echo);
        assert_eq!(action("/status"), Action::Echo);
        assert_eq!(action("/api/status/500"), Action::Echo);
    }

    #[test]
    fn status_path() {
        assert_eq!(
            action("/status/503"),
            Action::Status(StatusCode::SERVICE_UNAVAILABLE)
        );
        assert_eq!(
            action("/status/204"),
            Action::Status(StatusCode::NO_CONTENT)
        );
        assert_eq!(action("/status/abc"), Action::BadRequest);
        assert_eq!(action("/status/99"), Action::BadRequest);
        assert_eq!(action("/status/600"), Action::BadRequest);
    }

    #[test]
    fn delay_path_is_capped() {
        assert_eq!(
            action("/delay/250"),
            Action::Delay(Duration::from_millis(250))
        );
        assert_eq!(action("/delay/999999999"), Action::Delay(MAX_DELAY));
        assert_eq!(action("/delay/-1"), Action::BadRequest);
    }

    #[test]
    fn fail_status_overrides_path() {
        let s = status(Action::Status(StatusCode::OK), Some(503));
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(Action::Echo, Some(5000)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status(Action::Delay(MAX_DELAY), None), StatusCode::OK);
    }

    #[test]
    fn bodiless_statuses() {
        assert!(!has_body(StatusCode::NO_CONTENT));
        assert!(!has_body(StatusCode::NOT_MODIFIED));
        assert!(!has_body(StatusCode::CONTINUE));
        assert!(has_body(StatusCode::OK));
        assert!(has_body(StatusCode::SERVICE_UNAVAILABLE));
    }
}
