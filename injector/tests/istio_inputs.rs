//! Istio's own injection inputs, injected here and checked against the structure of Istio's
//! expected outputs (`*.injected`): the same parts in the same places, under the mesh's names
//! (`istio-init` -> `mesh-init`, `istio-proxy` -> `mesh-proxy`, audience `istio-ca` ->
//! `mesh-ca`, health port 15020 -> 15021). Byte equality is not the goal: Istio injects more
//! (Envoy bootstrap files, many env variables) than this mesh needs.

use std::path::PathBuf;

use mesh_injector::manifest::inject_manifests;
use mesh_injector::workload::template_pointer;
use mesh_injector::{Injector, Template, Values};
use serde_json::Value;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/conformance/istio/pkg/kube/inject/testdata/inject")
        .join(name)
}

fn docs(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap()
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// Injects `name` and returns (ours, Istio's) pod templates.
fn inject(name: &str, values: Values) -> (Value, Value, Value) {
    let input = std::fs::read_to_string(testdata(name)).unwrap();
    let expected = std::fs::read_to_string(testdata(&format!("{name}.injected"))).unwrap();
    let inj = Injector::new(values, Template::default_template()).unwrap();
    let ours = docs(&inject_manifests(&inj, &input).unwrap().output);
    let theirs = docs(&expected);
    let original = docs(&input);
    assert_eq!(ours.len(), 1);
    let pod = |v: &Value| {
        let kind = v["kind"].as_str().unwrap();
        let ptr = template_pointer(kind).unwrap();
        v.pointer(ptr).unwrap().clone()
    };
    (pod(&original[0]), pod(&ours[0]), pod(&theirs[0]))
}

fn containers<'a>(pod: &'a Value, field: &str) -> Vec<&'a Value> {
    pod["spec"][field]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn find<'a>(list: &[&'a Value], name: &str) -> Option<&'a Value> {
    list.iter().copied().find(|c| c["name"] == name)
}

fn flag<'a>(c: &'a Value, f: &str) -> Option<&'a str> {
    let args: Vec<&str> = c["args"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let i = args.iter().position(|a| *a == f)?;
    args.get(i + 1).copied()
}

/// The parts every injected pod has, checked side by side with Istio's output.
fn check_common(ours: &Value, theirs: &Value, native: bool) {
    let (field, istio_field) = if native {
        ("initContainers", "initContainers")
    } else {
        ("containers", "containers")
    };
    // Init container with exactly NET_ADMIN and NET_RAW, as Istio's.
    let init = find(&containers(ours, "initContainers"), "mesh-init").expect("mesh-init");
    let istio_init = find(&containers(theirs, "initContainers"), "istio-init").unwrap();
    assert_eq!(
        init["securityContext"]["capabilities"],
        istio_init["securityContext"]["capabilities"]
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(init["args"][0], "iptables");
    // The sidecar, where Istio puts it.
    let proxy = find(&containers(ours, field), "mesh-proxy").expect("mesh-proxy");
    let istio_proxy = find(&containers(theirs, istio_field), "istio-proxy").unwrap();
    assert_eq!(proxy["restartPolicy"], istio_proxy["restartPolicy"]);
    for k in [
        "runAsUser",
        "runAsGroup",
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
    ] {
        assert_eq!(
            proxy["securityContext"][k], istio_proxy["securityContext"][k],
            "{k}"
        );
    }
    // Port 15021 in Istio's newer outputs; some older ones here still say 15020.
    let ready = &proxy["readinessProbe"]["httpGet"];
    assert_eq!(
        ready["path"],
        istio_proxy["readinessProbe"]["httpGet"]["path"]
    );
    assert_eq!(ready["port"], 15021);
    let env_names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    for downward in [
        "POD_NAME",
        "POD_NAMESPACE",
        "INSTANCE_IP",
        "SERVICE_ACCOUNT",
    ] {
        assert!(env_names(istio_proxy).iter().any(|n| n == downward));
        assert!(env_names(proxy).iter().any(|n| n == downward), "{downward}");
    }
    // Volumes: the projected token (their audience, our CA's) and the trust bundle.
    let token = |pod: &Value, audience: &str| {
        pod["spec"]["volumes"].as_array().unwrap().iter().any(|v| {
            v["projected"]["sources"][0]["serviceAccountToken"]["audience"] == audience
                && v["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"] == 43200
        })
    };
    assert!(token(theirs, "istio-ca") && token(ours, "mesh-ca"));
    let bundle = |pod: &Value, cm: &str| {
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["configMap"]["name"] == cm)
    };
    assert!(bundle(theirs, "istio-ca-root-cert") && bundle(ours, "mesh-ca-root-cert"));
    // Labels and annotations.
    for l in [
        "security.istio.io/tlsMode",
        "service.istio.io/canonical-name",
        "service.istio.io/canonical-revision",
    ] {
        // Some of Istio's older outputs here predate the canonical labels.
        assert!(ours["metadata"]["labels"][l].is_string(), "{l}");
        if !theirs["metadata"]["labels"][l].is_null() {
            assert_eq!(
                ours["metadata"]["labels"][l], theirs["metadata"]["labels"][l],
                "{l}"
            );
        }
    }
    for a in ["prometheus.io/scrape", "prometheus.io/path"] {
        assert!(ours["metadata"]["annotations"][a].is_string(), "{a}");
        if !theirs["metadata"]["annotations"][a].is_null() {
            assert_eq!(
                ours["metadata"]["annotations"][a], theirs["metadata"]["annotations"][a],
                "{a}"
            );
        }
    }
    let status = |pod: &Value, key: &str| -> Value {
        serde_json::from_str(pod["metadata"]["annotations"][key].as_str().unwrap()).unwrap()
    };
    let (s, is) = (
        status(ours, "sidecar.mesh.dev/status"),
        status(theirs, "sidecar.istio.io/status"),
    );
    let renamed = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|n| n.as_str().unwrap().replace("istio", "mesh"))
            .collect()
    };
    assert_eq!(
        renamed(&s["initContainers"]),
        renamed(&is["initContainers"])
    );
    assert_eq!(renamed(&s["containers"]), renamed(&is["containers"]));
}

#[test]
fn hello() {
    let (_, ours, theirs) = inject("hello.yaml", Values::default());
    check_common(&ours, &theirs, false);
    let init = find(&containers(&ours, "initContainers"), "mesh-init").unwrap();
    let istio_init = find(&containers(&theirs, "initContainers"), "istio-init").unwrap();
    for f in ["-i", "-b", "-p", "-z", "-u", "-m"] {
        assert_eq!(flag(init, f), flag(istio_init, f), "{f}");
    }
}

#[test]
fn hello_probes() {
    let (original, ours, theirs) = inject("hello-probes.yaml", Values::default());
    check_common(&ours, &theirs, false);
    for app in ["hello", "world"] {
        let mine = find(&containers(&ours, "containers"), app).unwrap();
        let istio = find(&containers(&theirs, "containers"), app).unwrap();
        let before = find(&containers(&original, "containers"), app).unwrap();
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            match istio[probe]["httpGet"]["path"].as_str() {
                Some(path) if path.starts_with("/app-health/") => {
                    assert_eq!(mine[probe]["httpGet"]["path"], path, "{app} {probe}");
                    assert_eq!(mine[probe]["httpGet"]["port"], 15021);
                }
                _ => assert_eq!(mine[probe], before[probe], "{app} {probe} must stay"),
            }
        }
        // Lifecycle hooks are not probes: untouched.
        assert_eq!(mine["lifecycle"], before["lifecycle"]);
    }
    // The original probes are handed to the proxy, ports resolved as Istio does.
    let env = |c: &Value, name: &str| -> Value {
        let e = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap();
        serde_json::from_str(e["value"].as_str().unwrap()).unwrap()
    };
    let proxy = find(&containers(&ours, "containers"), "mesh-proxy").unwrap();
    let istio_proxy = find(&containers(&theirs, "containers"), "istio-proxy").unwrap();
    let (mine, istio) = (
        env(proxy, "MESH_KUBE_APP_PROBERS"),
        env(istio_proxy, "ISTIO_KUBE_APP_PROBERS"),
    );
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&mine), keys(&istio));
    for k in keys(&istio) {
        assert_eq!(
            mine[&k]["httpGet"]["port"], istio[&k]["httpGet"]["port"],
            "{k}"
        );
    }
}

#[test]
fn native_sidecar() {
    let values = Values {
        cluster_version: Some("1.29".into()),
        ..Values::default()
    };
    let (_, ours, theirs) = inject("native-sidecar.yaml", values);
    check_common(&ours, &theirs, true);
    let order = |pod: &Value| -> Vec<String> {
        containers(pod, "initContainers")
            .iter()
            .map(|c| c["name"].as_str().unwrap().replace("istio", "mesh"))
            .collect()
    };
    assert_eq!(order(&ours), order(&theirs));
    // The pod's own native sidecar gets its HTTP probe rewritten too.
    let other = |pod: &Value| {
        find(&containers(pod, "initContainers"), "other-sidecar").unwrap()["readinessProbe"]["httpGet"]["path"].clone()
    };
    assert_eq!(other(&ours), other(&theirs));
}

#[test]
fn traffic_annotations() {
    let (_, ours, theirs) = inject("traffic-annotations.yaml", Values::default());
    check_common(&ours, &theirs, false);
    let init = find(&containers(&ours, "initContainers"), "mesh-init").unwrap();
    let istio_init = find(&containers(&theirs, "initContainers"), "istio-init").unwrap();
    for f in ["-i", "-x", "-b", "-o"] {
        assert_eq!(flag(init, f), flag(istio_init, f), "{f}");
    }
    // Istio lists its own ports in -d; `mesh-proxy iptables` exempts them by itself.
    let istio_d: Vec<&str> = flag(istio_init, "-d")
        .unwrap()
        .split(',')
        .filter(|p| !["15090", "15021", "15020"].contains(p))
        .collect();
    assert_eq!(flag(init, "-d").unwrap(), istio_d.join(","));
    let proxy = find(&containers(&ours, "containers"), "mesh-proxy").unwrap();
    assert_eq!(proxy["resources"]["requests"]["cpu"], "4000m");
}

#[test]
fn host_network_is_untouched() {
    let input = std::fs::read_to_string(testdata("hello-host-network.yaml")).unwrap();
    let expected =
        docs(&std::fs::read_to_string(testdata("hello-host-network.yaml.injected")).unwrap());
    let inj = Injector::new(Values::default(), Template::default_template()).unwrap();
    let report = inject_manifests(&inj, &input).unwrap();
    assert_eq!(report.output, input);
    assert!(report.injected.is_empty());
    // Istio leaves it alone as well.
    assert!(expected[0]["spec"]["template"]["spec"]["initContainers"].is_null());
    assert!(expected[0]["spec"]["template"]["metadata"]["annotations"].is_null());
}
