use super::*;
use mesh_api::networking::VirtualService;

fn vs(namespace: &str, name: &str, spec: &str) -> VsEntry {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    );
    let (r, e) = mesh_api::load_str("vs.yaml", &yaml);
    assert!(e.is_empty(), "{e:?}");
    let mesh_api::Resource::VirtualService(v) = &r[0] else {
        panic!()
    };
    let spec: VirtualService = v.spec.clone();
    VsEntry {
        namespace: namespace.into(),
        name: name.into(),
        created: String::new(),
        hosts: spec.hosts.clone(),
        spec,
    }
}

fn uri(m: &HttpMatchRequest) -> (Option<&str>, Option<&str>) {
    let u = m.uri.as_ref().unwrap();
    (u.exact.as_deref(), u.prefix.as_deref())
}

const ROOT: &str = "  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - name: root
    match: [{uri: {prefix: /api}, headers: {x-a: {exact: '1'}}}]
    timeout: 3s
    delegate: {name: api, namespace: team}
  - route: [{destination: {host: web}}]
";

#[test]
fn delegate_routes_take_the_roots_match_and_settings() {
    let delegate = vs(
        "team",
        "api",
        "  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}, {uri: {exact: /api/health}, method: {exact: GET}}]
    route: [{destination: {host: api-v2}}]
  - match: [{uri: {prefix: /other}}]
    route: [{destination: {host: other}}]
  - route: [{destination: {host: api-v1.team.svc.cluster.local}}]
    timeout: 1s
",
    );
    let mut root = vs("edge", "shop", ROOT);
    let mut warnings = Vec::new();
    Delegates::of(&[delegate]).merge_into(&mut root, &mut warnings);
    let http = &root.spec.http;
    assert_eq!(http.len(), 3, "the conflicting /other route is dropped");
    assert!(warnings[0].contains("conflicts"), "{warnings:?}");

    assert_eq!(http[0].name.as_deref(), Some("root-v2"));
    assert_eq!(uri(&http[0].matches[0]), (None, Some("/api/v2")));
    assert_eq!(uri(&http[0].matches[1]), (Some("/api/health"), None));
    for m in &http[0].matches {
        assert_eq!(
            m.headers["x-a"].exact.as_deref(),
            Some("1"),
            "root header kept"
        );
    }
    assert_eq!(
        http[0].route[0].destination.host, "api-v2.team.svc.cluster.local",
        "resolved in the delegate's namespace"
    );
    assert_eq!(http[0].timeout.as_ref().unwrap().as_std().as_secs(), 3);
    assert!(http[0].delegate.is_none());

    // No match of its own: the root's.
    assert_eq!(uri(&http[1].matches[0]), (None, Some("/api")));
    assert_eq!(http[1].timeout.as_ref().unwrap().as_std().as_secs(), 1);
    // The root's other routes stay, after.
    assert_eq!(http[2].route[0].destination.host, "web");
}

#[test]
fn a_missing_or_unexported_delegate_skips_the_route() {
    let mut root = vs("edge", "shop", ROOT);
    let mut warnings = Vec::new();
    Delegates::of(&[]).merge_into(&mut root, &mut warnings);
    assert_eq!(root.spec.http.len(), 1);
    assert!(warnings[0].contains("team/api not found"), "{warnings:?}");

    let private = vs(
        "team",
        "api",
        "  exportTo: ['.']\n  http:\n  - route: [{destination: {host: api}}]\n",
    );
    let mut root = vs("edge", "shop", ROOT);
    let mut warnings = Vec::new();
    Delegates::of(&[private]).merge_into(&mut root, &mut warnings);
    assert_eq!(root.spec.http.len(), 1);
    assert!(warnings[0].contains("not exported to edge"), "{warnings:?}");
}

#[test]
fn string_match_conflicts_as_istio() {
    let sm = |exact: Option<&str>, prefix: Option<&str>, regex: Option<&str>| StringMatch {
        exact: exact.map(Into::into),
        prefix: prefix.map(Into::into),
        regex: regex.map(Into::into),
    };
    let c = |r: &StringMatch, l: &StringMatch| string_match_conflict(Some(r), Some(l));
    let prefix = |p: &str| sm(None, Some(p), None);
    let exact = |e: &str| sm(Some(e), None, None);
    let regex = |r: &str| sm(None, None, Some(r));
    assert!(!c(&prefix("/a"), &prefix("/a/b")));
    assert!(c(&prefix("/a/b"), &prefix("/a")));
    assert!(!c(&prefix("/a"), &exact("/a/x")));
    assert!(c(&exact("/a"), &prefix("/a")));
    assert!(!c(&exact("/a"), &exact("/a")));
    assert!(c(&exact("/a"), &exact("/b")));
    assert!(c(&regex("/a.*"), &prefix("/a")));
    assert!(c(&prefix("/a"), &regex("/a.*")));
    assert!(!string_match_conflict(None, Some(&regex("x"))));
}
