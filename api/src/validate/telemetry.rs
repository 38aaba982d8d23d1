//! Telemetry rules (Istio's `ValidateTelemetry` and the CRD's schema rules), and what the
//! mesh does not implement of a valid Telemetry, reported as warnings.

use super::Errors;
use super::destination_rule::selector_labels;
use super::request_authentication::target_refs;
use crate::path::FieldPath;
use crate::telemetry::{
    ACCESS_LOG_PROVIDERS, Filter, IstioMetric, MetricsOverrides, ProviderRef, TagOperation,
    TagValue, Telemetry, is_label_name,
};

pub fn validate(t: &Telemetry, ns: Option<&str>, p: &FieldPath, errs: &mut Errors) {
    if let Some(sel) = &t.selector {
        selector_labels(
            &sel.match_labels,
            &p.key("selector").key("matchLabels"),
            errs,
        );
    }
    target_refs(
        t.selector.is_some(),
        &t.target_ref,
        &t.target_refs,
        ns,
        p,
        errs,
    );
    for (i, tr) in t.tracing.iter().enumerate() {
        let tp = p.key("tracing").index(i);
        providers(&tr.providers, &tp, errs);
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            errs.push(
                &tp.key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        for (name, tag) in &tr.custom_tags {
            let cp = tp.key("customTags").key(name);
            if name.is_empty() {
                errs.push(&cp, "tag name may not be empty");
            }
            let set = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
            ]
            .into_iter()
            .filter(|b| *b)
            .count();
            if set != 1 {
                errs.push(
                    &cp,
                    "exactly one of literal, environment or header must be set",
                );
            }
            if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
                errs.push(&cp.key("environment").key("name"), "name may not be empty");
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                errs.push(&cp.key("header").key("name"), "name may not be empty");
            }
        }
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let mp = p.key("metrics").index(i);
        providers(&m.providers, &mp, errs);
        for (j, o) in m.overrides.iter().enumerate() {
            overrides(o, &mp.key("overrides").index(j), errs);
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        let ap = p.key("accessLogging").index(i);
        providers(&a.providers, &ap, errs);
        if let Some(f) = &a.filter {
            // Istio refuses an expression that is not CEL; the proxy evaluates a subset of
            // CEL, so what it cannot evaluate is refused here rather than ignored there.
            if let Err(e) = Filter::parse(&f.expression) {
                errs.push(
                    &ap.key("filter").key("expression"),
                    format!("invalid filter expression {:?}: {e}", f.expression),
                );
            }
        }
    }
}

fn providers(list: &[ProviderRef], p: &FieldPath, errs: &mut Errors) {
    for (i, r) in list.iter().enumerate() {
        if r.name.is_empty() {
            errs.push(
                &p.key("providers").index(i).key("name"),
                "name in body should be at least 1 chars long",
            );
        }
    }
}

fn overrides(o: &MetricsOverrides, p: &FieldPath, errs: &mut Errors) {
    if let Some(m) = &o.match_ {
        if m.custom_metric.as_deref() == Some("") {
            errs.push(
                &p.key("match").key("customMetric"),
                "customMetric in body should be at least 1 chars long",
            );
        }
        if m.metric.is_some() && m.custom_metric.is_some() {
            errs.push(
                &p.key("match"),
                "only one of metric or customMetric can be set",
            );
        }
    }
    for (name, tag) in &o.tag_overrides {
        let tp = p.key("tagOverrides").key(name);
        if name.is_empty() {
            errs.push(&tp, "tag name may not be empty");
        }
        match (tag.operation.unwrap_or_default(), &tag.value) {
            (TagOperation::Upsert, None) => errs.push(
                &tp.key("value"),
                "value must be set when operation is UPSERT",
            ),
            (TagOperation::Remove, Some(_)) => errs.push(
                &tp.key("value"),
                "value must not be set when operation is REMOVE",
            ),
            _ => {}
        }
    }
}

/// What a valid Telemetry asks for that the mesh does not do, each with what happens
/// instead.
pub fn unsupported(t: &Telemetry, p: &FieldPath, out: &mut Errors) {
    if t.target_ref.is_some() || !t.target_refs.is_empty() {
        let field = if t.target_ref.is_some() {
            "targetRef"
        } else {
            "targetRefs"
        };
        out.push(
            &p.key(field),
            "targetRef attaches a Telemetry to a gateway or waypoint, which this mesh does not do; the Telemetry applies to no workload",
        );
    }
    for (i, m) in t.metrics.iter().enumerate() {
        let mp = p.key("metrics").index(i);
        for (j, r) in m.providers.iter().enumerate() {
            if r.name != "prometheus" {
                out.push(
                    &mp.key("providers").index(j).key("name"),
                    format!(
                        "metrics provider {:?} is not implemented (only prometheus); ignored",
                        r.name
                    ),
                );
            }
        }
        for (j, o) in m.overrides.iter().enumerate() {
            override_unsupported(o, &mp.key("overrides").index(j), out);
        }
        if m.reporting_interval.is_some() {
            out.push(
                &mp.key("reportingInterval"),
                "reportingInterval is not implemented; metrics are scraped, not pushed",
            );
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        let ap = p.key("accessLogging").index(i);
        for (j, r) in a.providers.iter().enumerate() {
            if !ACCESS_LOG_PROVIDERS.contains(&r.name.as_str()) {
                out.push(
                    &ap.key("providers").index(j).key("name"),
                    format!(
                        "access log provider {:?} is not implemented (only {}); no log is written for it",
                        r.name,
                        ACCESS_LOG_PROVIDERS.join(", ")
                    ),
                );
            }
        }
    }
    for (i, tr) in t.tracing.iter().enumerate() {
        let tp = p.key("tracing").index(i);
        if !tr.providers.is_empty() {
            out.push(
                &tp.key("providers"),
                "tracing providers are not selected per Telemetry; spans go to the OTLP collector each proxy is started with (--tracing-otlp-endpoint)",
            );
        }
        if tr.use_request_id_for_trace_sampling.is_some() {
            out.push(
                &tp.key("useRequestIdForTraceSampling"),
                "useRequestIdForTraceSampling is not implemented; the first proxy of a call samples at random",
            );
        }
        if tr.enable_istio_tags.is_some() {
            out.push(
                &tp.key("enableIstioTags"),
                "enableIstioTags is not implemented; spans always carry the istio.* tags",
            );
        }
    }
}

/// What of one metrics override the mesh does not do: custom metrics, tag names Prometheus
/// cannot carry and tag values other than those [`TagValue`] evaluates. Pilot leaves each
/// of these out of what it sends. A request value on a TCP metric is warned too: a
/// connection has no request, so the tag reads `unknown` (as Istio's failed expression).
fn override_unsupported(o: &MetricsOverrides, p: &FieldPath, out: &mut Errors) {
    let selector = o.match_.as_ref();
    if selector.is_some_and(|m| m.custom_metric.is_some()) {
        out.push(
            &p.key("match").key("customMetric"),
            "custom metrics are not implemented; this override is ignored",
        );
        return;
    }
    let tcp_only = matches!(
        selector.and_then(|m| m.metric),
        Some(
            IstioMetric::TcpOpenedConnections
                | IstioMetric::TcpClosedConnections
                | IstioMetric::TcpSentBytes
                | IstioMetric::TcpReceivedBytes
        )
    );
    for (name, tag) in &o.tag_overrides {
        let tp = p.key("tagOverrides").key(name);
        if !name.is_empty() && !is_label_name(name) {
            out.push(
                &tp,
                format!(
                    "{name:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*); this tag override is ignored"
                ),
            );
            continue;
        }
        if tag.operation.unwrap_or_default() != TagOperation::Upsert {
            continue;
        }
        let Some(value) = &tag.value else { continue };
        match TagValue::parse(value) {
            Err(e) => out.push(
                &tp.key("value"),
                format!("value {value:?} is not evaluated ({e}); this tag override is ignored"),
            ),
            Ok(TagValue::Literal(_)) => {}
            Ok(_) if tcp_only => out.push(
                &tp.key("value"),
                "a TCP metric has no request: this tag's value is \"unknown\"",
            ),
            Ok(_) => {}
        }
    }
}
