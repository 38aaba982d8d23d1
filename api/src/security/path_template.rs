//! Istio's path templates in AuthorizationPolicy `paths`: `{*}` matches one segment and
//! `{**}` one or more, each as a whole segment; no other `*`, `{` or `}` may appear in a
//! templated path. Validation and the proxy both use [`check`].

/// Whether `path` uses the template syntax at all.
pub fn is_template(path: &str) -> bool {
    path.contains('{') || path.contains('}')
}

/// `Ok` for a path without templates or a well-formed template.
pub fn check(path: &str) -> Result<(), String> {
    if !is_template(path) {
        return Ok(());
    }
    for segment in path.split('/') {
        let operator = segment == "{*}" || segment == "{**}";
        if !operator && segment.contains(['{', '}', '*']) {
            return Err(format!(
                "path template {path:?}: `{{*}}` and `{{**}}` must each be a whole segment"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        assert!(check("/plain*").is_ok());
        assert!(check("/foo/{*}/bar").is_ok());
        assert!(check("/{**}/path/template").is_ok());
        assert!(check("/foo/x{*}").is_err());
        assert!(check("/foo/{*}*").is_err());
        assert!(check("/foo/{**}/a*").is_err());
        assert!(check("/foo/}").is_err());
    }
}
