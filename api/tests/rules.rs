//! One case per validation rule: a small spec and the error line it must produce.

use mesh_api::{Kind, Resource, load_str};

fn api_version(kind: &str) -> &'static str {
    match kind {
        "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        _ => "networking.istio.io/v1",
    }
}

/// Error lines for one object of `kind` with `spec` (YAML, indented by two).
fn errors(kind: &str, spec: &str) -> Vec<String> {
    let text = format!(
        "apiVersion: {}\nkind: {kind}\nmetadata:\n  name: t\n  namespace: ns\nspec:\n{spec}",
        api_version(kind)
    );
    load_str("t.yaml", &text)
        .1
        .iter()
        .map(ToString::to_string)
        .collect()
}

const ROUTE: &str = "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n";

#[rustfmt::skip]
const CASES: &[(&str, &str, &str)] = &[
    // VirtualService
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 150\n    - destination: {host: reviews, subset: v2}\n      weight: -50\n",
        "spec.http[0].route[0].weight: must be between 0 and 100"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n      weight: 50\n    - destination: {host: reviews, subset: v2}\n      weight: 40\n",
        "spec.http[0].route: total destination weight 90 != 100"),
    ("VirtualService", "  gateways: [gw]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "delegate virtual service must have no gateways specified"),
    ("VirtualService", "  hosts: [Bad_Host]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.hosts[0]: domain name \"Bad_Host\" invalid"),
    ("VirtualService", "  hosts: [\"*\"]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"),
    ("VirtualService", "  hosts: [reviews]\n", "spec: http, tcp or tls must be provided in virtual service"),
    ("VirtualService", "  hosts: [reviews]\n  gateways: [bad_gw]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.gateways[0]: invalid gateway name"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: \"(\"}\n    route:\n    - destination: {host: reviews}\n", "spec.http[0].match[0].uri.regex: \"(\" is not a valid regex"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - match:\n    - uri: {regex: \"(?x)/a#\"}\n    route:\n    - destination: {host: reviews}\n", "spec.http[0].match[0].uri.regex: \"(?x)/a#\" is not a valid regex: it cannot be matched in full"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - match:\n    - port: 70000\n    route:\n    - destination: {host: reviews}\n", "spec.http[0].match[0].port: port number 70000 must be between 1-65535"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: -1}\n", "spec.http[0].retries.attempts: attempts cannot be negative"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 2, retryOn: \"5xx,bogus\"}\n", "spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 2, perTryTimeout: 0s}\n", "spec.http[0].retries.perTryTimeout: duration must be greater than 1ms"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 500us\n", "spec.http[0].timeout: duration must be greater than 1ms"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 1.5ms\n", "spec.http[0].timeout: only durations to ms precision are supported"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    timeout: 3 seconds\n", "spec.http[0].timeout: invalid duration \"3 seconds\""),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {abort: {httpStatus: 500, percentage: {value: 150}}}\n", "spec.http[0].fault.abort.percentage.value: percentage 150 is out of range 0..100"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {abort: {httpStatus: 700}}\n", "spec.http[0].fault.abort.httpStatus: invalid abort http status 700"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {abort: {grpcStatus: \"14\", percentage: {value: 10}}}\n", "spec.http[0].fault.abort.grpcStatus: \"14\" is not a valid gRPC code"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {abort: {http2Error: REFUSED_STREAM}}\n", "spec.http[0].fault.abort.http2Error: HTTP/2 abort fault injection not supported yet"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {delay: {percent: 101, fixedDelay: 1s}}\n", "spec.http[0].fault.delay.percent: percent 101 is out of range 0..100"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {delay: {percentage: {value: 10}}}\n", "spec.http[0].fault.delay: delay must specify fixedDelay"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {}\n", "spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    fault: {abort: {httpStatus: 500, percentage: {value: 0.00001}}}\n", "spec.http[0].fault.abort.percentage.value: percentage 0.00001 is neither 0.0, nor in range [0.0001, 100.0]"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    mirror: {host: mirror}\n    mirrorPercentage: {value: 100.5}\n", "spec.http[0].mirrorPercentage.value: percentage 100.5 is out of range 0..100"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    redirect: {uri: /x}\n", "spec.http[0]: HTTP route cannot contain both route and redirect"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - redirect: {redirectCode: 200}\n", "spec.http[0].redirect: redirect must specify URI, authority, scheme, or port"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - redirect: {uri: /x, redirectCode: 200}\n", "spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    rewrite: {}\n", "spec.http[0].rewrite: rewrite must specify URI, authority, or uriRegexRewrite"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    rewrite: {uriRegexRewrite: {match: '^/a', rewrite: ''}}\n", "spec.http[0].rewrite.uriRegexRewrite: UriRegexRewrite requires both Rewrite and Match fields to be specified"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - match: [{uri: {prefix: /}}]\n", "spec.http[0]: HTTP route, redirect, direct response or delegate is required"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - directResponse: {status: 99}\n", "spec.http[0].directResponse.status: invalid status 99"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - directResponse: {status: 200, body: {bytes: 'not*base64'}}\n", "spec.http[0].directResponse.body.bytes: not base64"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, port: {number: 0}}\n", "spec.http[0].route[0].destination.port.number: port number 0 must be between 1-65535"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: V1}\n", "spec.http[0].route[0].destination.subset: subset name \"V1\" is invalid"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: \"*\"}\n", "spec.http[0].route[0].destination.host: invalid destination host *"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    headers: {request: {set: {\"bad header\": x}}}\n", "spec.http[0].headers.request.set[bad header]: header name \"bad header\" is not a valid header name"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    corsPolicy: {allowMethods: [FETCH]}\n", "spec.http[0].corsPolicy.allowMethods[0]: \"FETCH\" is not a supported HTTP method"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    corsPolicy: {maxAge: 1.5s}\n", "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision"),
    ("VirtualService", "  hosts: [api.example.com]\n  tls:\n  - route:\n    - destination: {host: api.example.com}\n", "spec.tls[0].match: TLS route must have at least one match condition"),
    ("VirtualService", "  hosts: [api.example.com]\n  tls:\n  - match: [{sniHosts: [other.example.com]}]\n    route:\n    - destination: {host: api.example.com}\n", "spec.tls[0].match[0].sniHosts[0]: the SNI host \"other.example.com\" is not a match for any virtual service host"),
    ("VirtualService", "  hosts: [db]\n  tcp:\n  - match: [{destinationSubnets: [10.0.0.0/99]}]\n    route:\n    - destination: {host: db}\n", "spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/99\" is not a valid IP address or CIDR block"),
    ("VirtualService", "  hosts: [db]\n  tcp:\n  - route: []\n", "spec.tcp[0].route: route is required"),
    ("VirtualService", "  hosts: [reviews]\n  exportTo: [\".\", \".\"]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.exportTo[1]: duplicate entries in exportTo: ."),
    ("VirtualService", "  hosts: [reviews]\n  exportTo: [\"*\", ns1]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.exportTo: cannot have both public (*) and non-public exportTo values"),
    ("VirtualService", "  hosts: [a.example.com, \"*.example.com\"]\n  http:\n  - route:\n    - destination: {host: reviews}\n", "spec.hosts: duplicate hosts in virtual service: a.example.com & *.example.com"),
    ("VirtualService", "  http:\n  - route:\n    - destination: {host: reviews}\n  tcp:\n  - route:\n    - destination: {host: reviews}\n", "spec.tcp: delegate virtual service must have no tcp route specified"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - redirect: {uri: /x}\n    fault: {abort: {httpStatus: 500}}\n", "spec.http[0]: HTTP route cannot contain both fault and redirect"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    retries: {attempts: 0, retryOn: 5xx}\n", "spec.http[0].retries: http retry policy configured when attempts are set to 0 (disabled)"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - delegate: {name: sub}\n", "spec.http[0].delegate: http delegate only applies to gateway"),
    ("VirtualService", "  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n    corsPolicy: {allowOrigins: [{exact: \"\"}]}\n", "spec.http[0].corsPolicy.allowOrigins[0]: empty match is not a valid match type for CORS allow origins"),
    // DestinationRule
    ("DestinationRule", "  subsets: [{name: v1}]\n", "spec.host: host is required"),
    ("DestinationRule", "  host: reviews\n  subsets: [{name: v1}, {name: v1}]\n", "spec.subsets[1].name: duplicate subset names: v1"),
    ("DestinationRule", "  host: reviews\n  subsets: [{name: V_1}]\n", "spec.subsets[0].name: subset name \"V_1\" is invalid"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}}\n", "spec.trafficPolicy.loadBalancer.consistentHash: only one of httpHeaderName"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {loadBalancer: {simple: FASTEST}}\n", "spec.trafficPolicy.loadBalancer.simple: unsupported value \"FASTEST\""),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {outlierDetection: {maxEjectionPercent: 150}}\n", "spec.trafficPolicy.outlierDetection.maxEjectionPercent: maxEjectionPercent must be between 0 and 100"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {outlierDetection: {interval: 0s}}\n", "spec.trafficPolicy.outlierDetection.interval: duration must be greater than 1ms"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}\n", "spec.trafficPolicy.connectionPool.tcp.maxConnections: -1 must not be negative"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0s}}}\n", "spec.trafficPolicy.connectionPool.tcp.connectTimeout: duration must be greater than 1ms"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {tls: {mode: MUTUAL}}\n", "spec.trafficPolicy.tls.clientCertificate: client certificate required for mutual tls"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {tls: {mode: ISTIO_MUTUAL, clientCertificate: a.pem}}\n", "spec.trafficPolicy.tls: cannot specify client certificates"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}\n", "spec.trafficPolicy.portLevelSettings[0].port: port must be specified"),
    ("DestinationRule", "  host: reviews\n  subsets:\n  - name: v1\n    trafficPolicy: {connectionPool: {http: {maxRetries: -2}}}\n", "spec.subsets[0].trafficPolicy.connectionPool.http.maxRetries: -2 must not be negative"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {}\n", "spec.trafficPolicy: traffic policy must have at least one field"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}\n", "spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field"),
    ("DestinationRule", "  host: reviews\n  trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {name: user}}}}\n", "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.ttl: ttl required for HttpCookie"),
    // ServiceEntry
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: FOO}]\n", "spec.ports[0].protocol: unsupported protocol: FOO"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: a.example.com}]\n", "spec.endpoints[0].address: endpoint address \"a.example.com\" is not a valid IP address"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 1.2.3.4, ports: {grpc: 90}}]\n", "spec.endpoints[0].ports.grpc: endpoint port grpc is not defined by the service entry"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  addresses: [300.1.1.1]\n", "spec.addresses[0]: \"300.1.1.1\" is not a valid IP address or CIDR block"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  resolution: MAGIC\n", "spec.resolution: unsupported value \"MAGIC\""),
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: Http_1, protocol: HTTP}]\n", "spec.ports[0].name: invalid port name: Http_1"),
    ("ServiceEntry", "  hosts: [a.example.com, b.example.com]\n  ports: [{number: 5432, name: pg, protocol: TCP}]\n  resolution: DNS\n", "spec.hosts: multiple hosts provided with non-HTTP, non-TLS ports"),
    ("ServiceEntry", "  hosts: [\"*.example.com\"]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n", "spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n  endpoints: [{address: bad_name}]\n", "spec.endpoints[0].address: endpoint address \"bad_name\" is not a valid FQDN or an IP address"),
    ("ServiceEntry", "  hosts: [a.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: h2, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: \"unix:///run/a.sock\"}]\n", "spec.ports: exactly 1 service port required for unix endpoints"),
    // WorkloadEntry
    ("WorkloadEntry", "  address: bad_address\n", "spec.address: domain name \"bad_address\" invalid"),
    ("WorkloadEntry", "  address: 1.2.3.4\n  labels: {\"app\": \"bad value!\"}\n", "spec.labels.app: invalid label value \"bad value!\""),
    // Sidecar
    ("Sidecar", "  egress:\n  - port: {number: 80, protocol: HTTP, name: http}\n", "spec.egress[0].hosts: sidecar: egress listener must contain at least one host"),
    ("Sidecar", "  egress:\n  - hosts: [reviews]\n", "spec.egress[0].hosts[0]: sidecar: host \"reviews\" must be of form namespace/dnsName"),
    ("Sidecar", "  egress:\n  - hosts: [\"./*\"]\n  - port: {number: 80, protocol: HTTP, name: http}\n    hosts: [\"./*\"]\n", "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list"),
    ("Sidecar", "  ingress:\n  - defaultEndpoint: 127.0.0.1:8080\n", "spec.ingress[0].port: sidecar: ingress listener must have a port"),
    ("Sidecar", "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    defaultEndpoint: 10.1.1.1:8080\n", "spec.ingress[0].defaultEndpoint: sidecar: defaultEndpoint \"10.1.1.1:8080\" must use 127.0.0.1"),
    ("Sidecar", "  ingress:\n  - port: {number: 9080, protocol: HTTP, name: http}\n    captureMode: MAYBE\n", "spec.ingress[0].captureMode: unsupported value \"MAYBE\""),
    ("Sidecar", "  workloadSelector: {labels: {}}\n", "spec.workloadSelector: sidecar: workloadSelector cannot have empty labels"),
    ("Sidecar", "  egress:\n  - hosts: [\"ns/reviews\"]\n", "spec.egress[0].hosts[0]: short names (non FQDN) are not allowed: \"reviews\""),
    ("Sidecar", "  egress:\n  - port: {number: 0, protocol: HTTP, name: uds}\n    hosts: [\"./*\"]\n", "spec.egress[0].bind: sidecar: ports with 0 value must have a unix domain socket bind address"),
    // Gateway
    ("Gateway", "  selector: {istio: ingressgateway}\n", "spec.servers: gateway must have at least one server"),
    ("Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n", "spec.servers[0].tls: server must have TLS settings for HTTPS/TLS protocols"),
    ("Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n", "spec.servers[0].hosts: server config must contain at least one host"),
    ("Gateway", "  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE}\n", "spec.servers[0].tls.serverCertificate: SIMPLE TLS requires a server certificate or credentialName"),
    ("Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"bad_ns/*\"]\n", "spec.servers[0].hosts[0]: invalid namespace \"bad_ns\""),
    ("Gateway", "  servers:\n  - port: {number: 80, protocol: HTTP}\n    hosts: [\"*\"]\n", "spec.servers[0].port.name: port name must be set"),
    ("Gateway", "  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n", "spec.servers[0].tls: server cannot have TLS settings for plain text HTTP ports"),
    ("Gateway", "  servers:\n  - port: {number: 5432, name: pg, protocol: TCP}\n    hosts: [\"*\"]\n    tls: {mode: SIMPLE, credentialName: cert}\n", "spec.servers[0].tls: server cannot have TLS settings for non HTTPS/TLS ports"),
    // PeerAuthentication
    ("PeerAuthentication", "  portLevelMtls:\n    \"80\": {mode: STRICT}\n", "spec.portLevelMtls: portLevelMtls requires selector"),
    // AuthorizationPolicy
    ("AuthorizationPolicy", "  rules:\n  - from:\n    - source: {}\n", "spec.rules[0].from[0].source: `from.source` must not be empty"),
    ("AuthorizationPolicy", "  rules:\n  - to:\n    - operation: {ports: [http]}\n", "spec.rules[0].to[0].operation.ports[0]: invalid port: http"),
    ("AuthorizationPolicy", "  rules:\n  - when:\n    - key: request.color\n      values: [red]\n", "spec.rules[0].when[0].key: unknown attribute (request.color)"),
    ("AuthorizationPolicy", "  rules:\n  - when:\n    - key: source.ip\n", "spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key source.ip"),
    ("AuthorizationPolicy", "  rules:\n  - from:\n    - source: {ipBlocks: [1.2.3.4/40]}\n", "spec.rules[0].from[0].source.ipBlocks[0]: \"1.2.3.4/40\" is not a valid IP address or CIDR block"),
    ("AuthorizationPolicy", "  action: ALLOW\n  provider: {name: ext}\n", "spec.provider: provider must not be set with non CUSTOM action"),
    ("AuthorizationPolicy", "  action: CUSTOM\n", "spec.provider: CUSTOM action without provider"),
    ("AuthorizationPolicy", "  action: PERMIT\n", "spec.action: unsupported value \"PERMIT\""),
    // RequestAuthentication
    ("RequestAuthentication", "  jwtRules:\n  - audiences: [a]\n", "spec.jwtRules[0].issuer: issuer must be set"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwksUri: ftp://example.com/jwks\n", "spec.jwtRules[0].jwksUri: invalid jwksUri \"ftp://example.com/jwks\": url must have scheme"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n", "spec.jwtRules[0].jwksUri: jwksUri or jwks is required"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwks: 'not json'\n", "spec.jwtRules[0].jwks: jwks is not valid JSON"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwks: '{\"keys\":[{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}'\n", "spec.jwtRules[0].jwks: jwks has no usable key"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwks: '{\"keys\":[{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"AQ\"}]}'\n", "spec.jwtRules[0].jwks: jwks has no usable key"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwks: '{\"keys\":[{\"kty\":\"RSA\",\"n\":\"not base64!\",\"e\":\"AQAB\"}]}'\n", "spec.jwtRules[0].jwks: jwks has no usable key"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwks: '{\"keys\":[{\"kty\":\"RSA\",\"use\":\"enc\",\"n\":\"AQAB\",\"e\":\"AQAB\"}]}'\n", "spec.jwtRules[0].jwks: jwks has no usable key"),
    ("RequestAuthentication", "  jwtRules:\n  - issuer: x\n    jwksUri: https://example.com/jwks\n    fromHeaders: [{name: \"bad header\"}]\n", "spec.jwtRules[0].fromHeaders[0].name: header name \"bad header\" is not a valid header name"),
    // Telemetry
    ("Telemetry", "  accessLogging:\n  - filter: {expression: 'response.code >='}\n", "spec.accessLogging[0].filter.expression: invalid filter expression \"response.code >=\": at 16: unexpected end of expression"),
    ("Telemetry", "  accessLogging:\n  - filter: {expression: 'response.status == 1'}\n", "spec.accessLogging[0].filter.expression: invalid filter expression \"response.status == 1\": at 0: unknown attribute"),
    ("Telemetry", "  accessLogging:\n  - match: {mode: BOTH}\n", "spec.accessLogging[0].match.mode: unsupported value \"BOTH\""),
    ("Telemetry", "  tracing:\n  - randomSamplingPercentage: 101\n", "spec.tracing[0].randomSamplingPercentage: randomSamplingPercentage must be in range [0.0, 100.0]"),
    ("Telemetry", "  tracing:\n  - customTags:\n      a: {literal: {value: x}, header: {name: h}}\n", "spec.tracing[0].customTags.a: exactly one of literal, environment or header must be set"),
    ("Telemetry", "  selector: {matchLabels: {app: a}}\n  targetRef: {kind: Gateway, name: g}\n", "spec: only one of targetRefs or selector can be set"),
    ("Telemetry", "  accessLogging:\n  - providers: [{name: \"\"}]\n", "spec.accessLogging[0].providers[0].name: name in body should be at least 1 chars long"),
];

#[test]
fn every_rule_reports_field_and_reason() {
    let mut failures = Vec::new();
    for (kind, spec, want) in CASES {
        let errs = errors(kind, spec);
        if !errs.iter().any(|e| e.contains(want)) {
            failures.push(format!(
                "{kind} {spec:?}\n  want: {want}\n  got:  {errs:#?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

#[test]
fn a_plain_route_is_valid() {
    assert!(errors("VirtualService", ROUTE).is_empty());
}

#[test]
fn request_authentication_with_what_the_proxy_verifies_is_valid() {
    let spec = r#"  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"AQ","y":"Ag"},{"kty":"oct","k":"eA"}]}'
  - issuer: ed
    jwks: '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}'
    fromHeaders: [{name: x-jwt-assertion, prefix: "Bearer "}]
  - issuer: other
    jwksUri: https://example.com/jwks.json
"#;
    assert_eq!(errors("RequestAuthentication", spec), Vec::<String>::new());
}

#[test]
fn error_names_file_line_field_and_reason() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
    - destination:
        host: reviews
        subset: v2
      weight: 120
";
    let (ok, errs) = load_str("reviews.yaml", text);
    assert!(ok.is_empty());
    let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(
        lines.contains(
            &"reviews.yaml:16: spec.http[0].route[1].weight: must be between 0 and 100".to_string()
        ),
        "{lines:#?}"
    );
    let e = errs
        .iter()
        .find(|e| e.field == "spec.http[0].route[1].weight")
        .unwrap();
    assert_eq!(e.line, Some(16));
    assert_eq!(
        e.object.as_ref().unwrap().to_string(),
        "VirtualService/reviews"
    );
}

#[test]
fn lines_count_from_each_document_of_a_stream() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: a}
spec: {host: a}
---
# second document
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec:
  host: b
  trafficPolicy:
    outlierDetection:
      maxEjectionPercent: 101
";
    let (ok, errs) = load_str("dr.yaml", text);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].source().line, Some(1));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, Some(14));
    assert_eq!(errs[0].object.as_ref().unwrap().name, "b");
}

#[test]
fn unknown_fields_are_all_reported_with_path_and_line() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: r
  colour: blue
spec:
  hosts: [r]
  bogus: 1
  http:
  - route:
    - destination: {host: r}
    foo: bar
    retries:
      attempts: 1
      per_try_timeout: 1s
";
    let (ok, errs) = load_str("u.yaml", text);
    assert!(ok.is_empty());
    let lines: Vec<String> = errs.iter().map(ToString::to_string).collect();
    for want in [
        "u.yaml:5: metadata.colour: unknown field",
        "u.yaml:8: spec.bogus: unknown field",
        "u.yaml:12: spec.http[0].foo: unknown field",
        "u.yaml:15: spec.http[0].retries.per_try_timeout: unknown field (snake_case is a retired form; the field is `perTryTimeout`)",
    ] {
        assert!(
            lines.iter().any(|l| l == want),
            "missing {want:?} in {lines:#?}"
        );
    }
    let top = load_str("t.yaml", "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nextra: 1\nspec: {servers: []}\n").1;
    assert!(
        top.iter()
            .any(|e| e.to_string() == "t.yaml:4: extra: unknown field"),
        "{top:?}"
    );
}

#[test]
fn type_errors_name_the_field() {
    let errs = errors(
        "ServiceEntry",
        "  hosts: [a.example.com]\n  ports:\n  - number: eighty\n    name: http\n",
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("t.yaml:9: spec.ports[0].number: invalid type: string \"eighty\"")),
        "{errs:?}"
    );
}

#[test]
fn api_groups_and_kinds() {
    let doc = |api: &str, kind: &str| {
        format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec:\n  host: reviews\n")
    };
    for api in [
        "networking.istio.io/v1",
        "networking.istio.io/v1beta1",
        "networking.istio.io/v1alpha3",
        "networking.mesh.dev/v1",
        "networking.mesh.dev/v1beta1",
        "networking.mesh.dev/v1alpha3",
    ] {
        let (ok, errs) = load_str("x.yaml", &doc(api, "DestinationRule"));
        assert!(errs.is_empty() && ok.len() == 1, "{api}: {errs:?}");
        assert_eq!(ok[0].api_version(), api);
    }
    for api in [
        "security.istio.io/v1",
        "security.istio.io/v1beta1",
        "security.mesh.dev/v1",
        "security.mesh.dev/v1beta1",
    ] {
        let text = format!(
            "apiVersion: {api}\nkind: PeerAuthentication\nmetadata: {{name: x}}\nspec: {{mtls: {{mode: STRICT}}}}\n"
        );
        assert!(load_str("x.yaml", &text).1.is_empty(), "{api}");
    }
    let bad = load_str("x.yaml", &doc("networking.istio.io/v2", "DestinationRule")).1;
    assert_eq!(
        bad[0].to_string(),
        "x.yaml:1: apiVersion: unsupported apiVersion \"networking.istio.io/v2\" for kind DestinationRule"
    );
    let cross = load_str("x.yaml", &doc("security.istio.io/v1", "DestinationRule")).1;
    assert!(!cross.is_empty());
    let ef = load_str(
        "x.yaml",
        &doc("networking.istio.io/v1alpha3", "EnvoyFilter"),
    )
    .1;
    assert_eq!(
        ef[0].to_string(),
        "x.yaml:2: kind: unsupported kind EnvoyFilter (networking.istio.io/v1alpha3): this mesh does not serve it"
    );
    let noname = load_str("x.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {}\nspec: {host: a}\n").1;
    assert!(
        noname.iter().any(|e| e.field == "metadata.name"),
        "{noname:?}"
    );
}

#[test]
fn defaults_follow_istio() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [a.example.com]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ap}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: sc}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
";
    let (ok, errs) = load_str("d.yaml", text);
    assert!(errs.is_empty(), "{errs:?}");
    let Resource::ServiceEntry(se) = &ok[0] else {
        panic!()
    };
    assert_eq!(se.spec.resolution, mesh_api::networking::Resolution::None);
    assert_eq!(se.spec.location, None);
    assert_eq!(
        se.spec.location.unwrap_or_default(),
        mesh_api::networking::Location::MeshExternal
    );
    let Resource::AuthorizationPolicy(ap) = &ok[1] else {
        panic!()
    };
    assert_eq!(ap.spec.action, mesh_api::security::Action::Allow);
    let Resource::Sidecar(sc) = &ok[2] else {
        panic!()
    };
    assert_eq!(
        sc.spec.ingress[0].capture_mode,
        mesh_api::networking::CaptureMode::Default
    );
    assert_eq!(ok[2].kind(), Kind::Sidecar);
}

#[test]
fn resources_round_trip_through_json() {
    let (ok, errs) = load_str(
        "r.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: ns}}\nspec:\n{ROUTE}    timeout: 1.5s\n"
        ),
    );
    assert!(errs.is_empty(), "{errs:?}");
    let json = serde_json::to_value(&ok[0]).unwrap();
    assert_eq!(json["kind"], "VirtualService");
    assert_eq!(json["spec"]["http"][0]["timeout"], "1.5s");
    // Unset fields are left out, as Kubernetes writes objects.
    assert!(!json.to_string().contains("null"), "{json}");
    assert!(json["spec"].get("gateways").is_none());
    let mut back: Resource = serde_json::from_value(json).unwrap();
    back.set_source(ok[0].source().clone());
    assert_eq!(back, ok[0]);
}

#[test]
fn duplicate_keys_are_reported() {
    let text = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n  host: a\n  host: b\n";
    let errs = load_str("dup.yaml", text).1;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "dup.yaml:6: spec.host: duplicate key: the field is given more than once"
    );
}

#[test]
fn kubernetes_lists_are_expanded() {
    let text = "\
apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a}
  spec: {host: a}
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: b}
  spec:
    host: b
    subsets: [{name: V1}]
";
    let (ok, errs) = load_str("list.yaml", text);
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].name(), "a");
    assert_eq!(ok[0].source().line, Some(4));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .to_string()
            .starts_with("list.yaml:13: spec.subsets[0].name: subset name \"V1\" is invalid"),
        "{}",
        errs[0]
    );
}

#[test]
fn objects_without_a_file_are_named_by_kind_namespace_and_name() {
    let value = serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "r", "namespace": "prod"},
        "spec": {"host": "reviews", "subsets": [{"name": "v1", "labelz": {}}]}
    });
    let errs = mesh_api::decode_value(value.clone()).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        "DestinationRule/prod/r: spec.subsets[0].labelz: unknown field"
    );
    let mut ok = value;
    ok["spec"]["subsets"][0]
        .as_object_mut()
        .unwrap()
        .remove("labelz");
    ok["spec"]["host"] = "*".into();
    let r = mesh_api::decode_value(ok).unwrap();
    assert!(mesh_api::validate(&r).is_empty());
    assert_eq!(r.source().line, None);
}

#[test]
fn gateway_names_have_no_dots() {
    let text = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: my.gw}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [\"*\"]\n";
    let errs = load_str("gw.yaml", text).1;
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(
        errs[0].to_string(),
        "gw.yaml:3: metadata.name: invalid gateway name: \"my.gw\""
    );
}

#[test]
fn same_content_ignores_where_an_object_was_read_from() {
    let doc = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: shop}\nspec: {address: 198.18.0.1, labels: {app: a}}\n";
    let other = doc.replace("app: a", "app: b");
    let load = |text: &str| {
        let (mut resources, errors) = mesh_api::load_str("shop.yaml", text);
        assert!(errors.is_empty(), "{errors:?}");
        resources.pop().unwrap()
    };
    let first = load(doc);
    let moved_down = load(&format!("{other}---\n{doc}"));
    assert_ne!(first, moved_down, "read from another line");
    assert!(first.same_content(&moved_down));
    assert!(!first.same_content(&load(&other)));
}
