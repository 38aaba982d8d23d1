//! One test per warning: it fires on the broken config, at the right line, and stays silent
//! on the fixed one.

use super::*;

/// reviews (SE + two WorkloadEntries with sidecars) with subsets v1 and v2, and a legacy
/// workload whose proxy is disabled.
const MESH: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingress, namespace: istio-system}
spec: {address: 127.0.0.3, labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: legacy, namespace: legacy}
spec: {address: 127.0.0.2, labels: {app: legacy, security.istio.io/tlsMode: disabled}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
";

/// Findings for MESH plus `extra` (whose lines start after MESH's).
fn findings(extra: &str) -> Vec<Message> {
    let (resources, errors) = crate::load_str("mesh.yaml", &format!("{MESH}---\n{extra}"));
    assert!(errors.is_empty(), "{errors:?}");
    analyze(&resources, &Inventory::from_resources(&resources))
}

/// Line of `needle` in MESH + extra, 1-based.
fn line_of(extra: &str, needle: &str) -> usize {
    let text = format!("{MESH}---\n{extra}");
    text.lines()
        .position(|l| l.contains(needle))
        .expect("needle")
        + 1
}

fn codes(found: &[Message]) -> Vec<&'static str> {
    found.iter().map(|m| m.code.code()).collect()
}

#[test]
fn the_base_mesh_is_clean() {
    assert_eq!(findings(""), []);
}

const VS_V3: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 50
    - destination: {host: reviews, subset: v3}
      weight: 50
";

#[test]
fn a_subset_no_destination_rule_defines() {
    let found = findings(VS_V3);
    assert_eq!(codes(&found), ["IST0101"]);
    let m = &found[0];
    assert_eq!(
        m.text,
        "Referenced host+subset in destinationrule not found: \"reviews+v3\""
    );
    assert_eq!(m.line, Some(line_of(VS_V3, "subset: v3")));
    assert_eq!(
        m.to_string(),
        format!(
            "Error [IST0101] (VirtualService default/reviews mesh.yaml:{}) {}",
            m.line.unwrap(),
            m.text
        )
    );
    assert_eq!(findings(&VS_V3.replace("v3", "v2")), []);
}

#[test]
fn a_destination_rule_for_an_unknown_host() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings, namespace: default}\nspec:\n  host: ratings\n";
    let found = findings(dr);
    assert_eq!(codes(&found), ["IST0101"]);
    assert_eq!(found[0].text, "Referenced host not found: \"ratings\"");
    assert_eq!(found[0].line, Some(line_of(dr, "host: ratings")));
    assert_eq!(findings(&dr.replace("host: ratings", "host: reviews")), []);
}

#[test]
fn two_virtual_services_for_the_same_host() {
    let two = format!(
        "{}---\n{}",
        VS_V3.replace("v3", "v2"),
        VS_V3
            .replace("v3", "v1")
            .replace("name: reviews,", "name: reviews-b,")
    );
    let found = findings(&two);
    assert_eq!(codes(&found), ["IST0109", "IST0109"]);
    assert!(
        found[0].text.starts_with("The VirtualServices default/reviews,default/reviews-b associated with mesh gateway define the same host reviews.default.svc.cluster.local"),
        "{}",
        found[0].text
    );
    assert_eq!(
        (found[0].name.as_str(), found[1].name.as_str()),
        ("reviews", "reviews-b")
    );
    // Bound to a gateway only, the second one does not compete with the mesh's.
    let gateway_only = two.replace(
        "metadata: {name: reviews-b, namespace: default}\nspec:\n",
        "metadata: {name: reviews-b, namespace: default}\nspec:\n  gateways: [istio-system/public]\n",
    );
    assert_eq!(findings(&gateway_only), []);
}

#[test]
fn a_gateway_selector_matching_no_workload() {
    let gw = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: public, namespace: istio-system}\nspec:\n  selector: {istio: egressgateway}\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";
    let found = findings(gw);
    assert_eq!(codes(&found), ["IST0101"]);
    assert_eq!(
        found[0].text,
        "Referenced selector not found: \"istio=egressgateway\""
    );
    assert_eq!(found[0].line, Some(line_of(gw, "selector:")));
    assert_eq!(findings(&gw.replace("egressgateway", "ingressgateway")), []);
}

#[test]
fn an_authorization_policy_that_can_never_match() {
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: ratings, namespace: default}\nspec:\n  selector: {matchLabels: {app: ratings}}\n  rules:\n  - from:\n    - source: {namespaces: [default, bookinfo]}\n";
    let found = findings(ap);
    assert_eq!(codes(&found), ["IST0127", "IST0101"]);
    assert_eq!(
        found[0].text,
        "No matching workloads for this resource with the following labels: app=ratings"
    );
    assert_eq!(found[0].level, Level::Warning);
    assert_eq!(
        found[1].text,
        "Referenced namespace not found: \"bookinfo\""
    );
    assert_eq!(found[1].line, Some(line_of(ap, "namespaces:")));
    let fixed = ap
        .replace("app: ratings", "app: reviews")
        .replace("bookinfo", "legacy");
    assert_eq!(findings(&fixed), []);
    // A namespace-wide policy where no workload runs.
    let empty_ns = fixed
        .replace("namespace: default}", "namespace: shop}")
        .replace("  selector: {matchLabels: {app: reviews}}\n", "");
    assert_eq!(codes(&findings(&empty_ns)), ["IST0127"]);
}

#[test]
fn strict_mtls_to_a_workload_without_a_sidecar() {
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n";
    let found = findings(pa);
    assert_eq!(codes(&found), ["IST0103"]);
    assert_eq!(found[0].kind, "PeerAuthentication");
    assert!(
        found[0]
            .text
            .starts_with("The pod legacy.legacy is missing the Istio proxy")
    );
    assert_eq!(found[0].line, Some(line_of(pa, "mode: STRICT")));
    // The legacy namespace opts out: nothing to warn about.
    let opt_out = format!(
        "{pa}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: legacy}}\nspec:\n  mtls: {{mode: PERMISSIVE}}\n"
    );
    assert_eq!(findings(&opt_out), []);
    // A STRICT port of a workload policy counts too.
    let port = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: legacy, namespace: legacy}\nspec:\n  selector: {matchLabels: {app: legacy}}\n  portLevelMtls: {'8080': {mode: STRICT}}\n";
    let found = findings(port);
    assert_eq!(codes(&found), ["IST0103"]);
    assert_eq!(found[0].line, Some(line_of(port, "portLevelMtls")));
}

const LEGACY_SERVICE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: legacy}
spec:
  hosts: [legacy.legacy.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http}]
  workloadSelector: {labels: {app: legacy}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: legacy, namespace: legacy}
spec:
  host: legacy
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
";

#[test]
fn mesh_mtls_from_a_destination_rule_to_a_workload_without_a_sidecar() {
    let found = findings(LEGACY_SERVICE);
    assert_eq!(codes(&found), ["IST0103"]);
    assert_eq!(found[0].kind, "DestinationRule");
    assert!(
        found[0]
            .text
            .starts_with("The pod legacy.legacy is missing the Istio proxy")
    );
    assert_eq!(found[0].line, Some(line_of(LEGACY_SERVICE, "ISTIO_MUTUAL")));
    assert_eq!(
        findings(&LEGACY_SERVICE.replace("ISTIO_MUTUAL", "SIMPLE")),
        []
    );
}

#[test]
fn tls_disabled_to_workloads_whose_policy_is_strict() {
    let conflict = "\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec: {mtls: {mode: STRICT}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-plain, namespace: default}
spec:
  host: reviews
  trafficPolicy:
    tls: {mode: DISABLE}
";
    let found = findings(conflict);
    assert_eq!(codes(&found), ["IST0113"]);
    assert_eq!(
        found[0].text,
        "A DestinationRule and Policy are in conflict with regards to mTLS for host reviews.default.svc.cluster.local. The DestinationRule \"default/reviews-plain\" specifies that mTLS must be false but the Policy object \"default/default\" specifies STRICT."
    );
    assert_eq!(found[0].line, Some(line_of(conflict, "mode: DISABLE")));
    assert_eq!(findings(&conflict.replace("STRICT", "PERMISSIVE")), []);
}
